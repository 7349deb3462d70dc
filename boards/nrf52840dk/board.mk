# jeton on the nRF52840 DK (Nordic, Cortex-M4F, 1 MiB flash, 256 KiB RAM).
#
# Network: RIOT's netdev_default here is the nRF52840's IEEE 802.15.4 radio (nrf802154),
# so the token reaches the gateway over 6LoWPAN through a border router.
# RNG: the nRF52840's RNG peripheral (periph_hwrng).
# Flash: MTD_0 is the DK's external 64 Mbit MX25R6435F QSPI NOR flash (mtd_spi_nor);
# jeton uses its first JETON_FLASH_SECTORS 4 KiB sectors.

# Cortex-M4F: jeton-olm's assembly backend, sha2's compact backend, core and alloc built
# from source (see the fragment).
include $(JETON_ROOT)/riot-sys-config/cortex-m4f.mk
