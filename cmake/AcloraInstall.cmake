# Install rules and the package config. Each component has its own export set so
# that find_package(aclora COMPONENTS ...) looks for a dependency only when asked.
set(ACLORA_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/aclora)

install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS aclora_core aclora EXPORT acloraCoreTargets)
install(EXPORT acloraCoreTargets NAMESPACE aclora:: DESTINATION ${ACLORA_CMAKE_DIR})

install(DIRECTORY adapters/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS aclora_adapters EXPORT acloraAdaptersTargets)
install(EXPORT acloraAdaptersTargets NAMESPACE aclora:: DESTINATION ${ACLORA_CMAKE_DIR})

install(TARGETS aclora_logs EXPORT acloraLogsTargets)
install(EXPORT acloraLogsTargets NAMESPACE aclora:: DESTINATION ${ACLORA_CMAKE_DIR})
if(TARGET aclora_rank_picture)
  install(TARGETS aclora_rank_picture EXPORT acloraRankPictureTargets)
  install(EXPORT acloraRankPictureTargets NAMESPACE aclora:: DESTINATION ${ACLORA_CMAKE_DIR})
endif()

foreach(component IN ITEMS Eigen Torch CUDA)
  string(TOLOWER ${component} lower)
  if(TARGET aclora_${lower})
    install(DIRECTORY backends/${lower}/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
    install(TARGETS aclora_${lower} EXPORT aclora${component}Targets)
    install(EXPORT aclora${component}Targets NAMESPACE aclora:: DESTINATION ${ACLORA_CMAKE_DIR})
  endif()
endforeach()

if(TARGET aclora_train)
  install(TARGETS aclora_train EXPORT acloraTrainTargets)
  install(EXPORT acloraTrainTargets NAMESPACE aclora:: DESTINATION ${ACLORA_CMAKE_DIR})
endif()

configure_package_config_file(cmake/acloraConfig.cmake.in
  ${PROJECT_BINARY_DIR}/acloraConfig.cmake INSTALL_DESTINATION ${ACLORA_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/acloraConfigVersion.cmake
  COMPATIBILITY SameMinorVersion ARCH_INDEPENDENT)
install(FILES ${PROJECT_BINARY_DIR}/acloraConfig.cmake
              ${PROJECT_BINARY_DIR}/acloraConfigVersion.cmake
        DESTINATION ${ACLORA_CMAKE_DIR})
