# jeton on native64: RIOT as a Linux process, networking over a tap interface, flash as a file.

# The tap interface `make term` attaches to (create it with tests/riot/run's setup or
# RIOT's dist/tools/tapsetup/tapsetup).
PORT ?= tap0

# native's MTD_0 is a file (8 MiB, 4 KiB sectors). Keep it next to the build rather than in
# whatever directory `make term` runs from, so the identity survives restarts predictably.
JETON_FLASH_FILE ?= $(BINDIR)/jeton-flash.bin
PROCARGS += --mtd=$(JETON_FLASH_FILE)
