# Finds what milmer::milmer needs and attaches it to a target; shared by the build and by the
# installed package config, so a consumer gets exactly what the project builds with.
include_guard(GLOBAL)
include(CMakeFindDependencyMacro)

find_package(CUDAToolkit REQUIRED)  # headers on both targets (__half, vector types, cuBLAS API)
if(MILMER_CUDA)
  enable_language(CUDA)
else()
  find_package(Threads REQUIRED)
  find_package(boost_context REQUIRED CONFIG)
  set(BLA_VENDOR OpenBLAS)
  find_package(BLAS REQUIRED)
  find_path(MILMER_CBLAS_INCLUDE_DIR cblas.h
    PATHS /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu /usr/include/openblas
    REQUIRED)
endif()

function(milmer_link_dependencies target)
  target_include_directories(${target} SYSTEM INTERFACE ${CUDAToolkit_INCLUDE_DIRS})
  if(MILMER_CUDA)
    target_compile_definitions(${target} INTERFACE MILMER_BUILT_FOR_CUDA=1)
    target_link_libraries(${target} INTERFACE CUDA::cudart CUDA::cublas CUDA::cublasLt)
  else()
    target_include_directories(${target} SYSTEM INTERFACE ${MILMER_CBLAS_INCLUDE_DIR})
    target_link_libraries(${target} INTERFACE Boost::context BLAS::BLAS Threads::Threads
      ${CMAKE_DL_LIBS})
    # Kernel names in emulator errors and counters come from the dynamic symbol table.
    target_link_options(${target} INTERFACE -rdynamic)
  endif()
endfunction()
