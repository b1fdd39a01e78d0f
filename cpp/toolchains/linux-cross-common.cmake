# Shared part of the Linux cross toolchains: the including file sets SLIMEDGE_CROSS_TRIPLE,
# SLIMEDGE_CROSS_PROCESSOR and SLIMEDGE_CROSS_QEMU first.
#
# Debian's cross compilers (g++-<triple>) keep the target's headers and libraries under
# /usr/<triple>; pass -DSLIMEDGE_SYSROOT=... for another root (e.g. a board's mounted image).
# Test binaries run under qemu-user (binfmt need not be registered): ctest prefixes each test
# command with CMAKE_CROSSCOMPILING_EMULATOR, and -L gives qemu the target's dynamic loader.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${SLIMEDGE_CROSS_PROCESSOR})

set(CMAKE_C_COMPILER ${SLIMEDGE_CROSS_TRIPLE}-gcc)
set(CMAKE_CXX_COMPILER ${SLIMEDGE_CROSS_TRIPLE}-g++)

set(SLIMEDGE_SYSROOT "/usr/${SLIMEDGE_CROSS_TRIPLE}" CACHE PATH
    "Root of the target's headers and libraries (also qemu's -L prefix)")
set(CMAKE_FIND_ROOT_PATH ${SLIMEDGE_SYSROOT})
# Programs (compilers, qemu) come from the build machine; everything linked from the target.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

set(CMAKE_CROSSCOMPILING_EMULATOR "${SLIMEDGE_CROSS_QEMU};-L;${SLIMEDGE_SYSROOT}")
