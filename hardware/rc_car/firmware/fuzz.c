/* libFuzzer harness for the firmware core (rc_core.c, the same source the ATmega328P runs).
 *
 * Each input drives one fresh core. Input byte 0 picks the mode:
 *   even: the rest is a raw byte stream (garbage, truncated and overlong frames, stray zeros);
 *   odd:  the rest is cut into chunks that the harness frames correctly (its own COBS and CRC),
 *         one bit flipped in some of them, so the message layer (types, lengths, ranges,
 *         sequence numbers, arming, failsafe) is reached with well-formed frames too.
 * The clock advances 1 ms every 4 bytes and the failsafe tick runs after every byte.
 *
 * The oracle, checked on every step (any violation aborts, which libFuzzer reports as a crash):
 *   - a command is applied only from a frame that the harness itself decoded (independent COBS
 *     decoder, bitwise CRC) as a DRIVE with a 6-byte body, pulses in 1000-2000 us, while armed,
 *     with a sequence number newer than the last one accepted;
 *   - the outputs are always within 1000-2000 us, and neutral whenever the core is not armed;
 *   - armed never outlives the failsafe timeout (now - last valid command <= timeout).
 * At exit it prints how many commands were applied and refused across the run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rc_core.h"

static uint32_t clock_ms;
static uint8_t frame_ok;            /* the harness's own verdict on the frame being delimited */
static uint8_t frame[RC_MAX_FRAME]; /* its decoded payload (without CRC) */
static int frame_len;
static uint8_t pending[64];
static int pending_len, pending_over;
static uint16_t accepted_seq;
static uint8_t have_accepted;
static unsigned long long applied_total, frames_total, invalid_total;

static uint16_t ref_crc(const uint8_t *d, int n) { /* bitwise, independent of rc_core.c */
    uint16_t crc = 0xFFFF;
    for (int i = 0; i < n; i++)
        for (int b = 7; b >= 0; b--) {
            int bit = ((d[i] >> b) & 1) ^ (crc >> 15);
            crc = (uint16_t)(crc << 1);
            if (bit) crc ^= 0x1021;
        }
    return crc;
}

static int ref_decode(const uint8_t *src, int len, uint8_t *dst) {
    int i = 0, o = 0;
    while (i < len) {
        int code = src[i++];
        if (code == 0 || i + code - 1 > len) return -1;
        for (int k = 1; k < code; k++) dst[o++] = src[i++];
        if (code != 0xFF && i < len) dst[o++] = 0;
    }
    return o;
}

static void check(int cond, const char *what) {
    if (!cond) {
        fprintf(stderr, "ORACLE VIOLATION: %s\n", what);
        abort();
    }
}

void rc_fuzz_applied(const rc_core_t *c, const uint8_t *payload, uint8_t len) {
    (void)c;
    check(frame_ok, "a command was applied from a frame that fails COBS/CRC");
    check(len == 7 && frame_len == 7 && memcmp(payload, frame, 7) == 0,
          "the applied payload is not the frame's");
    check(payload[0] == RC_MSG_DRIVE, "applied a non-DRIVE message");
    uint16_t seq = (uint16_t)(payload[1] | payload[2] << 8);
    uint16_t s = (uint16_t)(payload[3] | payload[4] << 8), e = (uint16_t)(payload[5] | payload[6] << 8);
    check(s >= 1000 && s <= 2000 && e >= 1000 && e <= 2000, "applied a pulse out of range");
    check(have_accepted && (int16_t)(seq - accepted_seq) > 0, "applied an old sequence number");
    accepted_seq = seq;
    applied_total++;
}

static void sink(void *ctx, const uint8_t *f, uint8_t len) { (void)ctx; (void)f; (void)len; }
static uint32_t now_us(void *ctx) { (void)ctx; return clock_ms * 1000u; }

static void feed(rc_core_t *c, const rc_io_t *io, uint8_t b, int *count) {
    if (b == 0) {
        int n = pending_over ? -1 : ref_decode(pending, pending_len, frame);
        frame_ok = !pending_over && pending_len > 0 && n >= 3 && n <= RC_MAX_PAYLOAD + 2
                   && ref_crc(frame, n - 2) == (uint16_t)(frame[n - 2] | frame[n - 1] << 8);
        frame_len = frame_ok ? n - 2 : -1;
        pending_len = pending_over = 0;
        uint16_t invalid_before = c->invalid_cmds;
        rc_rx_byte(c, io, b, clock_ms);
        frames_total++;
        invalid_total += (unsigned long long)(c->invalid_cmds - invalid_before);
        /* an ARM that took effect sets the sequence baseline the oracle tracks */
        if (frame_ok && frame[0] == RC_MSG_ARM && (c->flags & RC_FLAG_ARMED)
            && c->last_seq == (uint16_t)(frame[1] | frame[2] << 8)) {
            accepted_seq = c->last_seq;
            have_accepted = 1;
        }
        if (frame_ok && frame[0] == RC_MSG_HELLO && frame_len == 2) have_accepted = 0;
    } else {
        if (pending_len < RC_MAX_FRAME) pending[pending_len++] = b;
        else pending_over = 1; /* overlong: dropped at its delimiter */
        rc_rx_byte(c, io, b, clock_ms);
    }
    if (++*count % 4 == 0) clock_ms++;
    rc_tick(c, io, clock_ms);
    check(c->steer_us >= 1000 && c->steer_us <= 2000 && c->esc_us >= 1000 && c->esc_us <= 2000,
          "outputs out of range");
    if (!(c->flags & RC_FLAG_ARMED))
        check(c->steer_us == RC_NEUTRAL_US && c->esc_us == RC_NEUTRAL_US,
              "not armed but outputs not neutral");
    else
        check(clock_ms - c->last_valid_ms <= c->timeout_ms, "armed past the failsafe timeout");
}

static void cobs_frame(const uint8_t *payload, int len, uint8_t *out, int *out_len) {
    uint8_t raw[80];
    memcpy(raw, payload, (size_t)len);
    uint16_t crc = ref_crc(payload, len);
    raw[len] = (uint8_t)crc;
    raw[len + 1] = (uint8_t)(crc >> 8);
    len += 2;
    int code_at = 0, o = 1;
    uint8_t code = 1;
    for (int i = 0; i < len; i++) {
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
    *out_len = o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    rc_core_t core;
    rc_io_t io = {sink, now_us, 0};
    clock_ms = 0;
    pending_len = pending_over = 0;
    have_accepted = 0;
    rc_init(&core, 0, 0);
    clock_ms = RC_ARM_NEUTRAL_MS; /* past the ESC arming time, so ARM can succeed */
    int count = 0;
    if (!(data[0] & 1)) {
        for (size_t i = 1; i < size; i++) feed(&core, &io, data[i], &count);
        return 0;
    }
    size_t i = 1;
    while (i < size) { /* chunk: [len (low 5 bits) | flip flag (bit 7)] payload... */
        uint8_t head = data[i++];
        int len = head & 0x1F;
        if (len == 0) len = 1;
        if (i + (size_t)len > size) len = (int)(size - i);
        if (len <= 0) break;
        uint8_t out[80];
        int n;
        cobs_frame(data + i, len, out, &n);
        i += (size_t)len;
        if ((head & 0x80) && n > 1) out[(head & 0x60) % (n - 1)] ^= (uint8_t)(1u << (head & 7));
        for (int k = 0; k < n; k++) feed(&core, &io, out[k], &count);
        if (head & 0x40) /* a pause: time passes with no bytes (failsafe territory) */
            for (int k = 0; k < (head & 0x1F) * 4; k++) {
                clock_ms++;
                rc_tick(&core, &io, clock_ms);
                if (core.flags & RC_FLAG_ARMED)
                    check(clock_ms - core.last_valid_ms <= core.timeout_ms,
                          "armed past the failsafe timeout");
                else
                    check(core.esc_us == RC_NEUTRAL_US, "not armed but ESC not neutral");
            }
    }
    return 0;
}

__attribute__((destructor)) static void report(void) {
    fprintf(stderr, "rc_core fuzz: %llu frames delimited, %llu commands applied (each checked "
                    "by the oracle), %llu refused as invalid\n",
            frames_total, applied_total, invalid_total);
}
