# jeton on Microchip's SAM E54 Xplained Pro (ATSAME54P20A, Cortex-M4F, 1 MiB flash,
# 256 KiB RAM).
#
# Network: wired Ethernet. netdev_default selects the SAM E54's GMAC driver (sam0_eth) with
# the board's KSZ8091 PHY; the token gets its IPv6 addresses by SLAAC from the LAN.
# RNG: the SAM E54's TRNG (periph_hwrng).
# Flash: MTD_0 is the board's external QSPI NOR flash (mtd_spi_nor over periph_spi_on_qspi);
# jeton uses its first JETON_FLASH_SECTORS 4 KiB sectors.

# Cortex-M4F: jeton-olm's assembly backend, sha2's compact backend, core and alloc built
# from source (see the fragment).
include $(JETON_ROOT)/riot-sys-config/cortex-m4f.mk
