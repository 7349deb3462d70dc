# The crypto configuration of jeton's Cortex-M4F boards, the one tests/cortex-m measures;
# included by their boards/<board>/board.mk.
#
# - jeton-olm's `cortex-m4-asm` backend: X25519 and Ed25519 on salty's assembly field
#   arithmetic (firmware/riot/Cargo.toml's feature, salty built at opt-level 3 there), and
#   with the link (jeton.mk) jeton-link's: P-256 on P256-Cortex-M4's assembly, a C file and an
#   assembly file that the `cc` crate builds with arm-none-eabi-gcc.
# - sha2's and aes' compact software backends: sha2's saves about 31 KB of flash for about
#   4 % more instructions in a Megolm encrypt, aes' the fixsliced AES-256 code
#   (tests/cortex-m/.cargo/config.toml).
# - LLVM's machine outliner on top of the release profile: about 6 KB less flash for about
#   3 % more instructions (tests/cortex-m/.cargo/config.toml).
# - no source locations in panics and `{:?}` printing nothing (nothing the token shows uses
#   `Debug`): 4.2 KB less flash for the same instructions (`-Z` flags, like build-std: set
#   `JETON_Z_FLAGS=` where the toolchain takes none).
# - core and alloc built from source for thumbv7em-none-eabihf (`-Zbuild-std`, so that
#   they get the release profile too): the rustup toolchain here has no standard library
#   for the target; Debian's rustc with rust-web-src and RUSTC_BOOTSTRAP=1 builds them
#   (riot-sys-config/README.md), with their `optimize_for_size` code paths (integer
#   formatting, sorting, slice copies: about 0.6 KB less flash, 1 KB with the link).
# (`JETON_BUILD_STD=` leaves it out where a toolchain has the target's library.)
JETON_BUILD_STD ?= -Zbuild-std=core,alloc -Zbuild-std-features=optimize_for_size
CARGO_OPTIONS += $(JETON_BUILD_STD) --features cortex-m4-asm
RUSTFLAGS += --cfg sha2_backend_soft="compact" --cfg aes_backend_soft="compact"
RUSTFLAGS += -C llvm-args=-enable-machine-outliner=always
# Code scheduled for the Cortex-M4 rather than a generic ARMv7E-M: a few hundred bytes less
# flash, no more instructions (tests/cortex-m/.cargo/config.toml).
RUSTFLAGS += -C target-cpu=cortex-m4
JETON_Z_FLAGS ?= -Zlocation-detail=none -Zfmt-debug=none
RUSTFLAGS += $(JETON_Z_FLAGS)
