/* The RC-car firmware's portable core: frame parser (COBS + CRC-16), message handling and the
 * failsafe, with no AVR dependency, so the same code runs on the ATmega328P (main.c) and on the
 * host under libFuzzer (fuzz.c). See ../PROTOCOL.md for every message and field. */
#ifndef RC_CORE_H
#define RC_CORE_H

#include <stdint.h>

#define RC_PROTOCOL_VERSION 1
#define RC_FW_MAJOR 1
#define RC_FW_MINOR 0

#define RC_MAX_PAYLOAD 32 /* bytes of type + body, before the CRC */
#define RC_MAX_FRAME 40   /* COBS-encoded payload + CRC, without the 0x00 delimiter */

/* host -> car */
#define RC_MSG_HELLO 0x01
#define RC_MSG_ARM 0x02
#define RC_MSG_DRIVE 0x03
#define RC_MSG_DISARM 0x04
#define RC_MSG_STATUS 0x05
/* car -> host */
#define RC_MSG_HELLO_REPLY 0x81
#define RC_MSG_TELEMETRY 0x83

/* pulse limits, microseconds: a command outside them is invalid (counted, never applied) */
#define RC_PULSE_MIN_US 1000
#define RC_PULSE_MAX_US 2000
#define RC_NEUTRAL_US 1500

#define RC_TIMEOUT_MIN_MS 20
#define RC_TIMEOUT_MAX_MS 90   /* + <= 5 ms to the neutral pulse: under the 100 ms bound */
#define RC_TIMEOUT_DEFAULT_MS 80
#define RC_ARM_NEUTRAL_MS 1000 /* neutral held this long after boot before arming (ESC arming) */

/* telemetry status flags */
#define RC_FLAG_LINKED 0x01       /* a HELLO with our protocol version was received */
#define RC_FLAG_ARMED 0x02        /* DRIVE commands are applied */
#define RC_FLAG_FAILSAFE 0x04     /* the failsafe fired since the last ARM */
#define RC_FLAG_WDT_RESET 0x08    /* this boot came from a watchdog reset */
#define RC_FLAG_READY 0x10        /* neutral held long enough: ARM will be accepted */
#define RC_FLAG_RX_OVERFLOW 0x20  /* the receive buffer overflowed since boot */

typedef struct {
    /* inputs kept by the hardware layer */
    uint32_t ticks;            /* encoder edges since boot */
    uint32_t last_edge_us;     /* firmware clock at the last edge */
    uint32_t edge_interval_us; /* between the last two edges; 0: fewer than two edges */
    uint8_t boot_flags;        /* RC_FLAG_WDT_RESET when the watchdog reset the chip */
    uint16_t rx_overflows;     /* bytes lost because the receive ring was full */
    /* outputs: the pulse widths the hardware must produce */
    uint16_t steer_us, esc_us;
    /* state */
    uint8_t flags;
    uint16_t last_seq;
    uint8_t have_seq;
    uint16_t timeout_ms;
    uint32_t last_valid_ms; /* clock of the last applied command */
    uint32_t boot_ms;
    /* counters (saturating) */
    uint16_t bad_frames;   /* COBS, CRC or length errors */
    uint16_t invalid_cmds; /* well-formed frames refused: range, sequence, state, version */
    uint16_t failsafes;    /* times the failsafe fired */
    uint32_t applied;      /* DRIVE commands applied */
    /* frame assembly */
    uint8_t buf[RC_MAX_FRAME];
    uint8_t len;
    uint8_t overrun; /* the current frame grew past RC_MAX_FRAME: drop it at its delimiter */
} rc_core_t;

/* What the core asks the hardware layer for (set by main.c or the fuzzer). */
typedef struct {
    void (*send)(void *ctx, const uint8_t *frame, uint8_t len); /* a whole wire frame, with 0x00 */
    uint32_t (*now_us)(void *ctx);
    void *ctx;
} rc_io_t;

void rc_init(rc_core_t *c, uint32_t now_ms, uint8_t boot_flags);
/* One received byte; a completed valid frame is handled at once. */
void rc_rx_byte(rc_core_t *c, const rc_io_t *io, uint8_t byte, uint32_t now_ms);
/* The failsafe check: call at least every millisecond. Returns 1 when it fired now. */
uint8_t rc_tick(rc_core_t *c, const rc_io_t *io, uint32_t now_ms);
/* Telemetry frame (already COBS-encoded and delimited) into out; returns its length. */
uint8_t rc_telemetry(const rc_core_t *c, const rc_io_t *io, uint8_t *out);
uint16_t rc_crc16(const uint8_t *data, uint8_t len); /* CRC-16/CCITT-FALSE (0x1021, 0xFFFF) */

/* Hook for the fuzzer's oracle: called for every command the core applies to the outputs. */
#ifdef RC_FUZZ
void rc_fuzz_applied(const rc_core_t *c, const uint8_t *payload, uint8_t len);
#endif

#endif
