# CMake toolchain file for libopus in host builds (HOST_CMAKE_TOOLCHAIN_FILE, set by the
# repository's .cargo/config.toml): the native compiler, and the token's configuration.
# Without the float API the encoder has no tonality analysis, as on the token.
set(OPUS_ENABLE_FLOAT_API OFF CACHE BOOL "the token has no float API")
