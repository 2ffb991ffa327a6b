// milmer::data: the DEAP shard format, its reader and writer, label schemes, evaluation
// protocols and a batcher with a background prefetch thread (docs/data.md). This header
// includes them all; each part has its own:
//   labels.hpp        label schemes (DEAP-2/3/4), their names and class names
//   shard_format.hpp  header and record layout, ShardDims, SampleInfo, the byte codec
//   shard_reader.hpp  Shard: opening, checking and reading one shard
//   shard_writer.hpp  ShardWriter: writing one shard atomically
//   dataset.hpp       Dataset: many shards as one indexed set
//   splits.hpp        subject-dependent k-fold and leave-one-subject-out splits
//   batcher.hpp       Batcher: shuffled, normalised batches with prefetch
#pragma once

#include <milmer/data/batcher.hpp>
#include <milmer/data/dataset.hpp>
#include <milmer/data/labels.hpp>
#include <milmer/data/shard_format.hpp>
#include <milmer/data/shard_reader.hpp>
#include <milmer/data/shard_writer.hpp>
#include <milmer/data/splits.hpp>
