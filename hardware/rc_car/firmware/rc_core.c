/* The RC-car firmware's portable core; see rc_core.h and ../PROTOCOL.md. */
#include "rc_core.h"

#include <string.h>

#ifdef __AVR__
#include <util/crc16.h>
#define CRC_STEP(crc, b) _crc_xmodem_update((crc), (b))
#else
static uint16_t crc_step(uint16_t crc, uint8_t b) {
    crc ^= (uint16_t)b << 8;
    for (uint8_t i = 0; i < 8; i++) crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    return crc;
}
#define CRC_STEP(crc, b) crc_step((crc), (b))
#endif

#define SAT_INC(x) do { if ((x) != (__typeof__(x))~(__typeof__(x))0) (x)++; } while (0)

uint16_t rc_crc16(const uint8_t *data, uint8_t len) {
    uint16_t crc = 0xFFFF;
    for (uint8_t i = 0; i < len; i++) crc = CRC_STEP(crc, data[i]);
    return crc;
}

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) {
    for (uint8_t i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* COBS-encode payload + its CRC into out and append the 0x00 delimiter; returns the length. */
static uint8_t encode(const uint8_t *payload, uint8_t len, uint8_t *out) {
    uint8_t raw[RC_MAX_PAYLOAD + 2];
    memcpy(raw, payload, len);
    put16(raw + len, rc_crc16(payload, len));
    len += 2;
    uint8_t code_at = 0, code = 1, o = 1;
    for (uint8_t i = 0; i < len; i++) {
        if (raw[i] == 0) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        } else {
            out[o++] = raw[i];
            code++;
        }
    }
    out[code_at] = code;
    out[o++] = 0;
    return o;
}

/* COBS-decode the frame in c->buf in place of dst; returns the decoded length or -1. */
static int decode(const uint8_t *src, uint8_t len, uint8_t *dst) {
    uint8_t i = 0, o = 0;
    while (i < len) {
        uint8_t code = src[i++];
        if (code == 0 || (uint16_t)i + code - 1 > len) return -1;
        for (uint8_t k = 1; k < code; k++) dst[o++] = src[i++];
        if (code != 0xFF && i < len) dst[o++] = 0;
    }
    return o;
}

void rc_init(rc_core_t *c, uint32_t now_ms, uint8_t boot_flags) {
    memset(c, 0, sizeof *c);
    c->steer_us = c->esc_us = RC_NEUTRAL_US;
    c->timeout_ms = RC_TIMEOUT_DEFAULT_MS;
    c->boot_ms = now_ms;
    c->boot_flags = boot_flags;
}

static void neutral(rc_core_t *c) {
    c->steer_us = c->esc_us = RC_NEUTRAL_US;
    c->flags &= (uint8_t)~RC_FLAG_ARMED;
}

uint8_t rc_telemetry(const rc_core_t *c, const rc_io_t *io, uint8_t *out) {
    uint8_t p[RC_MAX_PAYLOAD];
    p[0] = RC_MSG_TELEMETRY;
    put16(p + 1, c->last_seq);
    p[3] = c->flags | c->boot_flags | (c->rx_overflows ? RC_FLAG_RX_OVERFLOW : 0);
    put32(p + 4, io->now_us(io->ctx));
    put32(p + 8, c->ticks);
    put32(p + 12, c->last_edge_us);
    put32(p + 16, c->edge_interval_us);
    put16(p + 20, c->steer_us);
    put16(p + 22, c->esc_us);
    put16(p + 24, c->bad_frames);
    put16(p + 26, c->invalid_cmds);
    put16(p + 28, c->failsafes);
    put16(p + 30, c->rx_overflows);
    return encode(p, 32, out);
}

static void reply_telemetry(rc_core_t *c, const rc_io_t *io) {
    uint8_t out[RC_MAX_FRAME + 1];
    io->send(io->ctx, out, rc_telemetry(c, io, out));
}

static void reply_hello(rc_core_t *c, const rc_io_t *io) {
    uint8_t p[7] = {RC_MSG_HELLO_REPLY, RC_PROTOCOL_VERSION, RC_FW_MAJOR, RC_FW_MINOR, 0, 0,
                    c->boot_flags};
    put16(p + 4, RC_TIMEOUT_DEFAULT_MS);
    uint8_t out[RC_MAX_FRAME + 1];
    io->send(io->ctx, out, encode(p, sizeof p, out));
}

static uint8_t in_range(uint16_t us) { return us >= RC_PULSE_MIN_US && us <= RC_PULSE_MAX_US; }

/* A frame that passed COBS, length and CRC checks: p[0] is its type, n its body length. */
static void handle(rc_core_t *c, const rc_io_t *io, const uint8_t *p, uint8_t n,
                   uint32_t now_ms) {
    const uint8_t *b = p + 1;
    switch (p[0]) {
    case RC_MSG_HELLO:
        if (n != 1) break;
        if (b[0] == RC_PROTOCOL_VERSION) {
            c->flags |= RC_FLAG_LINKED;
            c->have_seq = 0;
        } else { /* a host speaking another version drives nothing */
            neutral(c);
            c->flags &= (uint8_t)~RC_FLAG_LINKED;
            SAT_INC(c->invalid_cmds);
        }
        reply_hello(c, io);
        return;
    case RC_MSG_ARM: {
        if (n != 4) break;
        uint16_t timeout = get16(b + 2);
        if ((c->flags & (RC_FLAG_LINKED | RC_FLAG_READY)) == (RC_FLAG_LINKED | RC_FLAG_READY)
            && timeout >= RC_TIMEOUT_MIN_MS && timeout <= RC_TIMEOUT_MAX_MS) {
            c->flags = (uint8_t)((c->flags | RC_FLAG_ARMED) & ~RC_FLAG_FAILSAFE);
            c->timeout_ms = timeout;
            c->last_valid_ms = now_ms;
            c->last_seq = get16(b);
            c->have_seq = 1;
        } else {
            SAT_INC(c->invalid_cmds);
        }
        reply_telemetry(c, io);
        return;
    }
    case RC_MSG_DRIVE: {
        if (n != 6) break;
        uint16_t seq = get16(b), steer = get16(b + 2), esc = get16(b + 4);
        if ((c->flags & RC_FLAG_ARMED) && c->have_seq && (int16_t)(seq - c->last_seq) > 0
            && in_range(steer) && in_range(esc)) {
            c->steer_us = steer;
            c->esc_us = esc;
            c->last_seq = seq;
            c->last_valid_ms = now_ms;
            c->applied++;
#ifdef RC_FUZZ
            rc_fuzz_applied(c, p, (uint8_t)(n + 1));
#endif
        } else {
            SAT_INC(c->invalid_cmds);
        }
        reply_telemetry(c, io);
        return;
    }
    case RC_MSG_DISARM:
        if (n != 2) break;
        neutral(c); /* always allowed: stopping is never refused */
        reply_telemetry(c, io);
        return;
    case RC_MSG_STATUS:
        if (n != 0) break;
        reply_telemetry(c, io);
        return;
    default:
        break;
    }
    SAT_INC(c->invalid_cmds); /* unknown type or wrong body length */
}

void rc_rx_byte(rc_core_t *c, const rc_io_t *io, uint8_t byte, uint32_t now_ms) {
    if (byte != 0) {
        if (c->len < RC_MAX_FRAME) c->buf[c->len++] = byte;
        else c->overrun = 1;
        return;
    }
    uint8_t len = c->len, overrun = c->overrun;
    c->len = 0;
    c->overrun = 0;
    if (len == 0) return; /* back-to-back delimiters: not a frame */
    uint8_t raw[RC_MAX_FRAME];
    int n = overrun ? -1 : decode(c->buf, len, raw);
    if (n < 3 || n > RC_MAX_PAYLOAD + 2
        || rc_crc16(raw, (uint8_t)(n - 2)) != get16(raw + n - 2)) {
        SAT_INC(c->bad_frames);
        return;
    }
    handle(c, io, raw, (uint8_t)(n - 3), now_ms);
}

uint8_t rc_tick(rc_core_t *c, const rc_io_t *io, uint32_t now_ms) {
    (void)io;
    if (!(c->flags & RC_FLAG_READY) && now_ms - c->boot_ms >= RC_ARM_NEUTRAL_MS)
        c->flags |= RC_FLAG_READY;
    if ((c->flags & RC_FLAG_ARMED) && now_ms - c->last_valid_ms > c->timeout_ms) {
        neutral(c);
        c->flags |= RC_FLAG_FAILSAFE;
        SAT_INC(c->failsafes);
        return 1;
    }
    return 0;
}
