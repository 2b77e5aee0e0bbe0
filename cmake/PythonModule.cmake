# The Python module (app/python): built when pybind11 (Debian's pybind11-dev) and the headers of
# the project's Python (scripts/setup.sh's .venv, else python3 on PATH) are found. Its objects go
# into a shared library, so every library it links is compiled position-independent when it is on.
set(STREAMRECON_PYTHON AUTO CACHE STRING "Build the Python module `streamrecon` (ON, OFF, AUTO)")
set_property(CACHE STREAMRECON_PYTHON PROPERTY STRINGS AUTO ON OFF)
set(_python_ok OFF)
# Sanitizer and fuzzer builds test the C++ only: AUTO leaves the module (and PIC) out there.
if(STREAMRECON_PYTHON STREQUAL "AUTO" AND (STREAMRECON_SANITIZE OR STREAMRECON_FUZZ))
  set(_python_skip ON)
endif()
if(NOT STREAMRECON_PYTHON STREQUAL "OFF" AND NOT _python_skip)
  if(EXISTS "${STREAMRECON_VENV}/bin/python3" AND NOT Python_EXECUTABLE)
    set(Python_EXECUTABLE "${STREAMRECON_VENV}/bin/python3")
  endif()
  find_package(Python 3.8 QUIET COMPONENTS Interpreter Development.Module)
  if(Python_FOUND)
    set(PYBIND11_FINDPYTHON ON)
    find_package(pybind11 2.6 CONFIG QUIET)
    set(_python_ok ${pybind11_FOUND})
    # pybind11 added Python 3.12 in 2.11; an older one builds a module that corrupts memory there.
    if(pybind11_FOUND AND Python_VERSION VERSION_GREATER_EQUAL 3.12 AND pybind11_VERSION VERSION_LESS 2.11)
      message(WARNING "Python module left out: pybind11 ${pybind11_VERSION} does not support Python ${Python_VERSION} "
                      "(needs 2.11 or newer; pass -Dpybind11_DIR=<a newer pybind11's share/cmake/pybind11>)")
      set(_python_ok OFF)
    endif()
  endif()
endif()
streamrecon_resolve(PYTHON _python_ok)
if(STREAMRECON_HAVE_PYTHON)
  set(CMAKE_POSITION_INDEPENDENT_CODE ON)
  message(STATUS "Python module: pybind11 ${pybind11_VERSION} for ${Python_EXECUTABLE} (Python ${Python_VERSION})")
endif()
