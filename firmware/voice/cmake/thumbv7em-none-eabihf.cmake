# CMake toolchain file for libopus on the token (Cortex-M4F, thumbv7em-none-eabihf), used by
# opusic-sys's build through CMAKE_TOOLCHAIN_FILE_thumbv7em_none_eabihf. cc-rs supplies the
# target flags (-mthumb -march=armv7e-m -mfloat-abi=hard -mfpu=fpv4-sp-d16).
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_AR arm-none-eabi-ar)
set(CMAKE_RANLIB arm-none-eabi-ranlib)
# A bare-metal compiler cannot link a test program without a C library's start-up code.
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
# The token encodes 16-bit PCM: no float API, so no lrintf from a C maths library.
set(OPUS_ENABLE_FLOAT_API OFF CACHE BOOL "the token has no float API")
# libopus's ARMv5E/ARMv6 inline assembly (SMULWB, SMLAWB, QADD...), which the Cortex-M4
# has; only libopus's autotools build detects it, so it is switched on here.
add_compile_definitions(OPUS_ARM_INLINE_ASM OPUS_ARM_INLINE_EDSP OPUS_ARM_INLINE_MEDIA)
