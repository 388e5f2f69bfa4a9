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
  target_link_libraries(aclora_torch INTERFACE aclora_core torch)
  target_include_directories(aclora_torch INTERFACE
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/backends/torch/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  list(APPEND ACLORA_ENABLED_BACKENDS Torch)
endif()

# Raw CUDA (cuBLAS, cuSOLVER, cuRAND, own kernels)
if(NOT ACLORA_WITH_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    find_package(CUDAToolkit QUIET)
  endif()
endif()
aclora_backend_wanted(CUDA CUDAToolkit_FOUND ACLORA_HAVE_CUDA)
if(ACLORA_HAVE_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)
  endif()
  enable_language(CUDA)
  add_library(aclora_cuda INTERFACE)
  add_library(aclora::cuda ALIAS aclora_cuda)
  set_target_properties(aclora_cuda PROPERTIES EXPORT_NAME cuda)
  target_link_libraries(aclora_cuda INTERFACE aclora_core CUDA::cudart CUDA::cublas
                                              CUDA::cusolver CUDA::curand)
  # CMake 3.25 does not hand -std=c++20 to nvcc 13 through CMAKE_CUDA_STANDARD.
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
endif()

message(STATUS "aclora backends: ${ACLORA_ENABLED_BACKENDS}")
