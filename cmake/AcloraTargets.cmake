# The INTERFACE targets: aclora::core, aclora::eigen, aclora::torch, aclora::cuda,
# aclora::adapters, aclora::logs, aclora::rank_picture and the umbrella aclora::aclora.
# Each backend target exists only when its dependency was found (or is required with
# ACLORA_WITH_<X>=ON); aclora::rank_picture only when cairo was found.

function(aclora_backend_wanted name found out)
  if(ACLORA_WITH_${name} STREQUAL "OFF")
    set(${out} OFF PARENT_SCOPE)
  elseif(ACLORA_WITH_${name} STREQUAL "ON" AND NOT ${found})
    message(FATAL_ERROR "ACLORA_WITH_${name}=ON but its dependency was not found")
  else()
    set(${out} ${found} PARENT_SCOPE)
  endif()
endfunction()

add_library(aclora_core INTERFACE)
add_library(aclora::core ALIAS aclora_core)
set_target_properties(aclora_core PROPERTIES EXPORT_NAME core)
target_compile_features(aclora_core INTERFACE cxx_std_20)
target_include_directories(aclora_core INTERFACE
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)

add_library(aclora_adapters INTERFACE)
add_library(aclora::adapters ALIAS aclora_adapters)
set_target_properties(aclora_adapters PROPERTIES EXPORT_NAME adapters)
target_link_libraries(aclora_adapters INTERFACE aclora_core)
target_include_directories(aclora_adapters INTERFACE
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/adapters/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)

# Log writers (metrics.jsonl, TensorBoard event files, progress bar): no dependency.
add_library(aclora_logs INTERFACE)
add_library(aclora::logs ALIAS aclora_logs)
set_target_properties(aclora_logs PROPERTIES EXPORT_NAME logs)
target_link_libraries(aclora_logs INTERFACE aclora_adapters)

# The rank picture (logs/rank_picture.hpp) draws with cairo, found with pkg-config.
find_package(PkgConfig QUIET)
if(PKG_CONFIG_FOUND)
  pkg_check_modules(ACLORA_CAIRO QUIET IMPORTED_TARGET GLOBAL cairo)
endif()
if(ACLORA_CAIRO_FOUND)
  add_library(aclora_rank_picture INTERFACE)
  add_library(aclora::rank_picture ALIAS aclora_rank_picture)
  set_target_properties(aclora_rank_picture PROPERTIES EXPORT_NAME rank_picture)
  target_link_libraries(aclora_rank_picture INTERFACE aclora_logs PkgConfig::ACLORA_CAIRO)
else()
  message(STATUS "aclora: cairo not found (pkg-config), aclora::rank_picture not created")
endif()

add_library(aclora INTERFACE)
add_library(aclora::aclora ALIAS aclora)
set_target_properties(aclora PROPERTIES EXPORT_NAME aclora)
target_link_libraries(aclora INTERFACE aclora_core)

set(ACLORA_ENABLED_BACKENDS "")

# Eigen (CPU)
if(NOT ACLORA_WITH_EIGEN STREQUAL "OFF")
  find_package(Eigen3 3.4 CONFIG QUIET)
  find_package(Threads QUIET)
endif()
aclora_backend_wanted(EIGEN Eigen3_FOUND ACLORA_HAVE_EIGEN)
if(ACLORA_HAVE_EIGEN)
  add_library(aclora_eigen INTERFACE)
  add_library(aclora::eigen ALIAS aclora_eigen)
  set_target_properties(aclora_eigen PROPERTIES EXPORT_NAME eigen)
  target_link_libraries(aclora_eigen INTERFACE aclora_core Eigen3::Eigen Threads::Threads)
  target_include_directories(aclora_eigen INTERFACE
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/backends/eigen/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  list(APPEND ACLORA_ENABLED_BACKENDS Eigen)
endif()

# LibTorch (CPU or CUDA tensors)
if(NOT ACLORA_WITH_TORCH STREQUAL "OFF")
  find_package(Torch QUIET)
endif()
aclora_backend_wanted(TORCH Torch_FOUND ACLORA_HAVE_TORCH)
if(ACLORA_HAVE_TORCH)
  add_library(aclora_torch INTERFACE)
  add_library(aclora::torch ALIAS aclora_torch)
  set_target_properties(aclora_torch PROPERTIES EXPORT_NAME torch)
  target_link_libraries(aclora_torch INTERFACE aclora_core torch ${CMAKE_DL_LIBS})
  target_include_directories(aclora_torch INTERFACE
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/backends/torch/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  list(APPEND ACLORA_ENABLED_BACKENDS Torch)
endif()

# Raw CUDA (own kernels, cuBLAS, cuSOLVER)
#
# GPU architectures of this project's CUDA programs (tests, benchmarks; aclora::cuda itself is
# header-only and carries none): CMAKE_CUDA_ARCHITECTURES (or the CUDAARCHS environment
# variable) when given; else those of the GPUs nvidia-smi shows (what `native` would pick),
# when nvcc supports them; else ACLORA_CUDA_DEFAULT_ARCHITECTURES: machine code for Turing
# (75: T4, GeForce 20), Ampere (80: A100; 86: GeForce 30, A10, A40), Ada (89: GeForce 40, L4,
# L40) and Hopper (90: H100, H200), plus Hopper's PTX, which the driver compiles for later
# GPUs (Blackwell). The list compiles several times slower than one architecture: CI sets
# CUDAARCHS to one (see tests/run.sh).
set(ACLORA_CUDA_DEFAULT_ARCHITECTURES "75-real;80-real;86-real;89-real;90" CACHE STRING
    "CUDA architectures when neither CMAKE_CUDA_ARCHITECTURES nor a visible GPU decides")
if(NOT ACLORA_WITH_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    find_package(CUDAToolkit QUIET)
  endif()
endif()
aclora_backend_wanted(CUDA CUDAToolkit_FOUND ACLORA_HAVE_CUDA)
if(ACLORA_HAVE_CUDA)
  set(_aclora_archs "${CMAKE_CUDA_ARCHITECTURES}")
  set(_aclora_arch_source "given")
  # A CUDA-enabled LibTorch's CMake config (Torch, above) enables CUDA itself, sets
  # CMAKE_CUDA_ARCHITECTURES to OFF, adds its own -gencode list (from TORCH_CUDA_ARCH_LIST, or
  # a list from compute_50 on, which nvcc 13 refuses) to CMAKE_CUDA_FLAGS and sets
  # CMAKE_CUDA_STANDARD (which CMake 3.25 cannot turn into nvcc 13 flags). Our targets take the
  # architectures back and get the C++ standard from the flag below. (Code that includes
  # LibTorch in .cu files would need its TORCH_CUDA_ARCH_LIST instead; we have none.)
  if(DEFINED NVCC_FLAGS_EXTRA AND "${CMAKE_CUDA_ARCHITECTURES}" STREQUAL "OFF")
    string(REGEX REPLACE "-gencode[ ;]+arch=[^ ;]+" "" CMAKE_CUDA_FLAGS "${CMAKE_CUDA_FLAGS}")
    unset(CMAKE_CUDA_STANDARD)
    unset(CMAKE_CUDA_STANDARD_REQUIRED)
    unset(CMAKE_CUDA_ARCHITECTURES)  # shows the cache value: the user's, or CMake's default
    set(_aclora_archs "$CACHE{CMAKE_CUDA_ARCHITECTURES}")
    get_property(_aclora_arch_help CACHE CMAKE_CUDA_ARCHITECTURES PROPERTY HELPSTRING)
    if(_aclora_arch_help MATCHES "^CUDA architectures" AND NOT DEFINED ENV{CUDAARCHS})
      set(_aclora_archs "")  # initialised by CMake when LibTorch enabled CUDA: not a choice
    endif()
  elseif(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND DEFINED ENV{CUDAARCHS})
    set(_aclora_archs "$ENV{CUDAARCHS}")
  endif()
  if(_aclora_archs STREQUAL "")
    set(_aclora_gpus "")
    find_program(ACLORA_NVIDIA_SMI nvidia-smi)
    if(ACLORA_NVIDIA_SMI)
      execute_process(COMMAND "${ACLORA_NVIDIA_SMI}" --query-gpu=compute_cap --format=csv,noheader
                      OUTPUT_VARIABLE _aclora_gpus RESULT_VARIABLE _aclora_smi ERROR_QUIET
                      OUTPUT_STRIP_TRAILING_WHITESPACE TIMEOUT 30)
      if(NOT _aclora_smi EQUAL 0)
        set(_aclora_gpus "")
      endif()
    endif()
    # Compute capabilities "9.0" become "90"; nvcc 13 builds for 7.5 and newer only.
    set(_aclora_native "")
    if(_aclora_gpus MATCHES "^[0-9]")
      string(REPLACE "\n" ";" _aclora_gpus "${_aclora_gpus}")
      list(REMOVE_DUPLICATES _aclora_gpus)
      foreach(_aclora_gpu IN LISTS _aclora_gpus)
        string(STRIP "${_aclora_gpu}" _aclora_gpu)
        if(_aclora_gpu VERSION_LESS 7.5)
          set(_aclora_native "")
          break()
        endif()
        string(REPLACE "." "" _aclora_gpu "${_aclora_gpu}")
        list(APPEND _aclora_native ${_aclora_gpu})
      endforeach()
    endif()
    if(_aclora_native)
      set(_aclora_archs "${_aclora_native}")
      string(REPLACE ";" ", " _aclora_gpus "${_aclora_gpus}")
      set(_aclora_arch_source "the GPU seen here, compute capability ${_aclora_gpus}")
    else()
      set(_aclora_archs "${ACLORA_CUDA_DEFAULT_ARCHITECTURES}")
      set(_aclora_arch_source "no GPU seen: ACLORA_CUDA_DEFAULT_ARCHITECTURES")
    endif()
  endif()
  set(CMAKE_CUDA_ARCHITECTURES "${_aclora_archs}")
  enable_language(CUDA)
  message(STATUS "aclora: CUDA architectures ${CMAKE_CUDA_ARCHITECTURES} (${_aclora_arch_source})")
  add_library(aclora_cuda INTERFACE)
  add_library(aclora::cuda ALIAS aclora_cuda)
  set_target_properties(aclora_cuda PROPERTIES EXPORT_NAME cuda)
  target_link_libraries(aclora_cuda INTERFACE aclora_core CUDA::cudart CUDA::cublas
                                              CUDA::cusolver)
  # CMake 3.25 does not hand -std=c++20 to nvcc 13 through CMAKE_CUDA_STANDARD: the flag goes
  # to nvcc directly.
  target_compile_options(aclora_cuda INTERFACE $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20>)
  target_include_directories(aclora_cuda INTERFACE
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/backends/cuda/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  list(APPEND ACLORA_ENABLED_BACKENDS CUDA)
endif()

# The LibTorch training layer (adapters/include/aclora/adapters/train): LoRA injection, the
# RESTART hook, optimizer policy, training state, export. Header-only over aclora::torch.
if(TARGET aclora_torch)
  add_library(aclora_train INTERFACE)
  add_library(aclora::train ALIAS aclora_train)
  set_target_properties(aclora_train PROPERTIES EXPORT_NAME train)
  target_link_libraries(aclora_train INTERFACE aclora_logs aclora_torch)
  # Multi-process training (train/distributed): Gloo's headers come from the system (Debian:
  # libgloo-dev) and are found by the header itself; NCCL's process group needs a CUDA
  # LibTorch and nccl.h (PyPI: the nvidia-nccl wheel beside torch, or NCCL_HOME).
  if(TORCH_CUDA_LIBRARIES)
    find_path(ACLORA_NCCL_INCLUDE_DIR nccl.h
              HINTS ${TORCH_INSTALL_PREFIX}/../nvidia/nccl/include $ENV{NCCL_HOME}/include
                    ${CUDAToolkit_INCLUDE_DIRS})
    if(ACLORA_NCCL_INCLUDE_DIR)
      target_include_directories(aclora_train SYSTEM INTERFACE ${ACLORA_NCCL_INCLUDE_DIR})
      target_compile_definitions(aclora_train INTERFACE ACLORA_WITH_NCCL USE_C10D_NCCL)
      message(STATUS "aclora: multi-GPU training over NCCL (${ACLORA_NCCL_INCLUDE_DIR})")
    else()
      message(STATUS "aclora: nccl.h not found: multi-GPU training is off (set NCCL_HOME)")
    endif()
  endif()
endif()

message(STATUS "aclora backends: ${ACLORA_ENABLED_BACKENDS}")
