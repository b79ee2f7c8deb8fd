// Explicit instantiation helper: each engine/cpu/*.cpp defines some of
// CpuBackend's members and instantiates them for float and double.
#pragma once
#define IPNA_CPU_INSTANTIATE_BOTH(MACRO) \
  MACRO(float)                           \
  MACRO(double)
