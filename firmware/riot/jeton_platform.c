/*
 * jeton-firmware's C side: the few RIOT facilities riot-sys does not translate.
 *
 * riot-sys does not include <mtd.h>, and the board name and RIOT version are
 * preprocessor strings, so these thin functions hand them to Rust with a
 * stable C ABI. They hold no state and make no decisions; the Rust adapters
 * in src/flash.rs and src/board.rs do.
 *
 * SPDX-License-Identifier: Apache-2.0
 */

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "kernel_defines.h"
#include "msg.h"
#include "board.h"
#include "periph/gpio.h"

#ifdef MODULE_MTD
#include "mtd.h"
#endif

/* How many sectors of MTD_0, from its first sector, belong to jeton. */
#ifndef JETON_FLASH_SECTORS
#define JETON_FLASH_SECTORS 33
#endif

const char *jeton_board_name(void)
{
    return RIOT_BOARD;
}

const char *jeton_riot_version(void)
{
    return RIOT_VERSION;
}

/* RIOT's network shell commands (ping, udp) register the calling thread with GNRC, which
 * needs a message queue; the shell runs in main. */
#ifndef JETON_MAIN_MSG_QUEUE_SIZE
#define JETON_MAIN_MSG_QUEUE_SIZE 8
#endif

void jeton_init_main_msg_queue(void)
{
    static msg_t queue[JETON_MAIN_MSG_QUEUE_SIZE];
    msg_init_queue(queue, JETON_MAIN_MSG_QUEUE_SIZE);
}

/* The same for the shell thread, which runs RIOT's `ping` and `udp`. */
void jeton_init_shell_msg_queue(void)
{
    static msg_t queue[JETON_MAIN_MSG_QUEUE_SIZE];
    msg_init_queue(queue, JETON_MAIN_MSG_QUEUE_SIZE);
}

/* The board's confirm button BTN0; -ENODEV where the board has none (native64). The Rust
 * side configures it through riot-wrappers' GPIO. */
int jeton_button_pin(gpio_t *pin)
{
#ifdef BTN0_PIN
    *pin = BTN0_PIN;
    return 0;
#else
    (void)pin;
    return -ENODEV;
#endif
}

/* Keys are only generated from RIOT's random module when it reads the hardware RNG:
 * the software PRNGs are seeded with 32 bits, too few for a long-term identity key. */
int jeton_rng_is_hardware(void)
{
    return IS_USED(MODULE_PRNG_HWRNG);
}

#ifdef MODULE_MTD

static mtd_dev_t *_jeton_mtd(void)
{
    if (MTD_NUMOF == 0) {
        return NULL;
    }
    return mtd_dev_get(0);
}

int jeton_flash_init(uint32_t *sector_size, uint32_t *sector_count,
                     uint32_t *write_size, uint32_t *device_sectors)
{
    mtd_dev_t *mtd = _jeton_mtd();
    if (mtd == NULL) {
        return -ENODEV;
    }
    int res = mtd_init(mtd);
    if (res < 0) {
        return res;
    }
    uint32_t sectors = mtd->sector_count;
    if (sectors > JETON_FLASH_SECTORS) {
        sectors = JETON_FLASH_SECTORS;
    }
    *sector_size = mtd->pages_per_sector * mtd->page_size;
    *sector_count = sectors;
    *write_size = mtd->write_size;
    *device_sectors = mtd->sector_count;
    return 0;
}

int jeton_flash_read(uint32_t offset, void *dest, uint32_t count)
{
    mtd_dev_t *mtd = _jeton_mtd();
    if (mtd == NULL) {
        return -ENODEV;
    }
    return mtd_read_page(mtd, dest, offset / mtd->page_size,
                         offset % mtd->page_size, count);
}

int jeton_flash_write(uint32_t offset, const void *src, uint32_t count)
{
    mtd_dev_t *mtd = _jeton_mtd();
    if (mtd == NULL) {
        return -ENODEV;
    }
    return mtd_write_page_raw(mtd, src, offset / mtd->page_size,
                              offset % mtd->page_size, count);
}

int jeton_flash_erase_sectors(uint32_t first, uint32_t count)
{
    mtd_dev_t *mtd = _jeton_mtd();
    if (mtd == NULL) {
        return -ENODEV;
    }
    return mtd_erase_sector(mtd, first, count);
}

#else /* no MODULE_MTD: the board has no flash device for jeton */

int jeton_flash_init(uint32_t *sector_size, uint32_t *sector_count,
                     uint32_t *write_size, uint32_t *device_sectors)
{
    (void)sector_size;
    (void)sector_count;
    (void)write_size;
    (void)device_sectors;
    return -ENODEV;
}

int jeton_flash_read(uint32_t offset, void *dest, uint32_t count)
{
    (void)offset;
    (void)dest;
    (void)count;
    return -ENODEV;
}

int jeton_flash_write(uint32_t offset, const void *src, uint32_t count)
{
    (void)offset;
    (void)src;
    (void)count;
    return -ENODEV;
}

int jeton_flash_erase_sectors(uint32_t first, uint32_t count)
{
    (void)first;
    (void)count;
    return -ENODEV;
}

#endif
