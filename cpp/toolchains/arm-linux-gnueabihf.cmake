# 32-bit ARM hard-float Linux: Raspberry Pi 2/3 and Pi Zero 2 W on a 32-bit OS.
# Debian's compiler targets ARMv7-A + VFPv3-D16 (Thumb-2) by default, which every ARMv7 and
# ARMv8 board runs in 32-bit mode. ARMv6 boards (Pi 1, Pi Zero/Zero W) need an ARMv6 build
# (-march=armv6 -mfpu=vfp -marm) with an ARMv6 C library, such as Raspberry Pi OS's own.
set(SLIMEDGE_CROSS_TRIPLE arm-linux-gnueabihf)
set(SLIMEDGE_CROSS_PROCESSOR armv7l)
set(SLIMEDGE_CROSS_QEMU qemu-arm)
# GCC notes that std::vector<uint64_t> is passed differently than before GCC 7.1: only
# relevant when mixing objects built by GCC < 7, which we never do.
set(CMAKE_CXX_FLAGS_INIT "-Wno-psabi")
include(${CMAKE_CURRENT_LIST_DIR}/linux-cross-common.cmake)
