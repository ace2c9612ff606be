# Included after each project() of the tf2 build (CMAKE_PROJECT_INCLUDE): the ROS wheels'
# imported targets name the include folders of the machine that built them (/opt/python/...),
# which CMake refuses at generation. Before generation, each such folder is replaced by this
# Python's (WHEEL_PYTHON_INCLUDE) or this venv's NumPy's (WHEEL_NUMPY_INCLUDE).
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _wheel_include_paths_here)

function(_wheel_include_paths_here)
  get_directory_property(targets DIRECTORY "${CMAKE_SOURCE_DIR}" IMPORTED_TARGETS)
  foreach(target IN LISTS targets)
    get_target_property(folders ${target} INTERFACE_INCLUDE_DIRECTORIES)
    if(folders AND folders MATCHES "/opt/python/")
      list(TRANSFORM folders REPLACE "^/opt/python/[^/]+/include/python[0-9.]+$"
        "${WHEEL_PYTHON_INCLUDE}")
      list(TRANSFORM folders REPLACE "^/opt/python/.*/numpy/_core/include$"
        "${WHEEL_NUMPY_INCLUDE}")
      set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${folders}")
    endif()
  endforeach()
endfunction()
