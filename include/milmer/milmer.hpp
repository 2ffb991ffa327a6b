// milmer: the umbrella header. Include this to get the whole library.
#pragma once

#include "milmer/context.hpp"   // defines: Context
#include "milmer/error.hpp"     // defines: Error, check, str
#include "milmer/memory.hpp"    // defines: DeviceBuffer, Arena, ArenaPlan
#include "milmer/platform.hpp"  // defines: launch, MILMER_CUDA_CHECK, MILMER_CUBLAS_CHECK
#include "milmer/rng.hpp"       // defines: Philox, philox_uniform, philox_normal, step_seed
#include "milmer/tensor.hpp"    // defines: TensorView, view, expect, expect_aligned
