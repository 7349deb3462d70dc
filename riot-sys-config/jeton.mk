# RIOT configuration shared by every jeton board; included by firmware/riot/Makefile before
# the board's boards/<board>/board.mk and RIOT's Makefile.include. riot-sys-config/README.md
# explains each setting and the measurements behind the stack sizes.

# --- the shell, with RIOT's own diagnostics (ps shows per-thread stack use) -----------------
USEMODULE += shell
USEMODULE += shell_cmds_default
USEMODULE += ps

# --- clock: ztimer in milliseconds (src/clock.rs) ---------------------------------------------
USEMODULE += ztimer
USEMODULE += ztimer_msec

# --- RNG: RIOT's random module reading the hardware RNG directly (src/rng.rs). --------------
# The software PRNGs are seeded with 32 bits, too few for identity keys, so a board without
# periph_hwrng cannot build jeton.
USEMODULE += random
USEMODULE += prng_hwrng

# --- storage: the board's first MTD device (src/flash.rs, jeton_platform.c) -----------------
USEMODULE += mtd
# Sectors of MTD_0, from sector 0, that belong to jeton (odd, at least 7): 0 account
# pickle, 1 storage key, 2 to N-2 the record store (pages of two sectors), N-1 self-test.
JETON_FLASH_SECTORS ?= 33
CFLAGS += -DJETON_FLASH_SECTORS=$(JETON_FLASH_SECTORS)
# The next sectors hold the token's files (src/files.rs: littlefs), fewer where MTD_0 ends
# sooner.
JETON_FILES_SECTORS ?= 1024
export JETON_FILES_SECTORS

# --- panel: LED0 and BTN0 (src/panel.rs) ---------------------------------------------------
USEMODULE += periph_gpio

# --- network: GNRC IPv6 with UDP sock (src/udp.rs) ---------------------------------------------
USEMODULE += netdev_default
USEMODULE += auto_init_gnrc_netif
USEMODULE += gnrc_ipv6_default
USEMODULE += gnrc_icmpv6_echo
USEMODULE += gnrc_sock_udp
USEMODULE += sock_udp

# --- stacks --------------------------------------------------------------------------------
# The main thread runs the Rust application: the event loop and jeton-olm's crypto. The
# Token (jeton-core's Matrix client) is a static built in place (src/lib.rs), not on this
# stack. Each stack is set at least 25 % above what `ps` measured on native64 or the call
# graph's worst case (tests/riot/stack_depth.py), whichever is larger; tests/riot/run checks
# both and riot-sys-config/README.md ("Stack sizes") has the figures.
ifeq (native64,$(BOARD))
  JETON_MAIN_STACKSIZE ?= 51200
else
  JETON_MAIN_STACKSIZE ?= 22528
endif
CFLAGS += -DTHREAD_STACKSIZE_MAIN=$(JETON_MAIN_STACKSIZE)
# The shell thread (src/lib.rs reads it at compile time): RIOT's shell and its commands, sized
# from native64's measurement on every board (x86-64 frames are the larger).
JETON_SHELL_STACKSIZE ?= 9216
export JETON_SHELL_STACKSIZE

# The gateway a fresh token talks to until `gateway <addr> <port>` stores another
# (src/matrix.rs reads them at compile time; a link-local address uses the first interface).
JETON_GATEWAY_ADDR ?= fe80::1
JETON_GATEWAY_PORT ?= 5683
export JETON_GATEWAY_ADDR JETON_GATEWAY_PORT

# Events print while the shell waits for a line: without a prompt each starts its own line,
# as jeton-sim prints them.
CFLAGS += -DCONFIG_SHELL_NO_PROMPT=1
# stdio's receive buffer holds what arrives before the shell thread reads it; RIOT's 64 bytes
# drop the end of a `send` line (a room id alone is ~45 bytes), newline included.
CFLAGS += -DSTDIO_RX_BUFSIZE=512

# --- the protected link to the gateway (EDHOC + OSCORE) -----------------------------------------
# The firmware's `link` feature on every board, provisioned with the shell's `pair <hex>`
# (boards/native64/README.md). On the Cortex-M4F boards it runs on P256-Cortex-M4's assembly
# (cortex-m4f.mk's `cortex-m4-asm`); JETON_LINK=0 builds a token that speaks plain CoAP.
JETON_LINK ?= 1
ifeq (1,$(JETON_LINK))
  CARGO_OPTIONS += --features link
endif

# --- voice messages ---------------------------------------------------------------------------
# jeton-core's `voice` feature (the event of a voice message, a received one shown as such) on
# native64 only: the Cortex-M boards' flash budget has no room for it yet.
ifeq (native64,$(BOARD))
  CARGO_OPTIONS += --features voice
endif

# --- Rust ----------------------------------------------------------------------------------
# Size matters on the Cortex-M boards; the profile itself (LTO, opt-level "s") is in
# firmware/riot/Cargo.toml.
CARGO_PROFILE ?= release

DEVELHELP ?= 1
QUIET ?= 1
