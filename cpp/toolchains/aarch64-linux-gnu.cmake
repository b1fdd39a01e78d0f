# 64-bit ARM Linux: Raspberry Pi 4/5 (64-bit OS), Jetson, Coral Dev Board.
# Baseline ARMv8-A code (GCC's default for this triple): runs on every 64-bit ARM board.
set(SLIMEDGE_CROSS_TRIPLE aarch64-linux-gnu)
set(SLIMEDGE_CROSS_PROCESSOR aarch64)
set(SLIMEDGE_CROSS_QEMU qemu-aarch64)
include(${CMAKE_CURRENT_LIST_DIR}/linux-cross-common.cmake)
