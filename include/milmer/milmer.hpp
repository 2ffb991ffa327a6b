// milmer: the umbrella header. Include this to get the whole library.
#pragma once

#include "milmer/error.hpp"     // defines: Error, check, str
#include "milmer/platform.hpp"  // defines: launch, MILMER_CUDA_CHECK, MILMER_CUBLAS_CHECK
