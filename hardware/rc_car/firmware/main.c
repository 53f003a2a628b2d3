/* robolearn RC-car firmware: ATmega328P at 16 MHz (Arduino Nano / Uno).
 *
 * Pins (Arduino names):  D9 / PB1 / OC1A  steering servo pulse
 *                        D10 / PB2 / OC1B ESC pulse
 *                        D2 / PD2 / INT0  wheel encoder (rising edges)
 *                        D0, D1           USB serial, 115200 baud 8N1
 * Timer1: CTC (mode 4, TOP = OCR1A), 0.5 us per count, one 20 ms frame per period. At the frame
 * start (compare A) the steering pin goes high; compare B ends it and starts the ESC pulse, and
 * ends that one in turn (the Arduino Servo library's sequencing). The widths are latched at the
 * frame start, so a command arriving mid-frame never distorts a pulse; the timer doubles as the
 * microsecond clock. (Why not the compare units' hardware PWM, mode 14: simavr 1.6, Debian's,
 * never applies a changed OCR1x in fast PWM mode, so the firmware-in-the-loop tests could not see
 * what the firmware commands; this scheme behaves the same on the chip and in simavr.)
 * Timer0: 1 kHz tick, the failsafe check. The main loop sleeps (idle mode) between interrupts
 * and feeds the AVR hardware watchdog, which resets a hung firmware (60 ms).
 * Everything the protocol does lives in rc_core.c (shared with the fuzzer). */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>
#include <avr/wdt.h>

#include "rc_core.h"

#define BAUD 115200UL
#define FRAME_COUNTS 40000U /* 20 ms at 0.5 us */
#define RX_SIZE 64          /* power of two */
#define TX_SIZE 128         /* power of two */

static volatile uint8_t rx_buf[RX_SIZE], rx_head, rx_tail;
static volatile uint16_t rx_lost;
static volatile uint8_t tx_buf[TX_SIZE], tx_head, tx_tail;
static volatile uint32_t ms_clock;    /* Timer0 ticks */
static volatile uint32_t frames;      /* Timer1 periods: 20 ms each */
static volatile uint32_t skipped_us;  /* frame time skipped by restart_frame(): the clock stays true */
static volatile uint16_t next_steer = RC_NEUTRAL_US * 2, next_esc = RC_NEUTRAL_US * 2;
static volatile uint16_t cur_steer, cur_esc;
static volatile uint8_t phase; /* 0: between pulses, 1: steering pulse, 2: ESC pulse */
static volatile uint32_t enc_ticks, enc_last_us, enc_interval_us;
static rc_core_t core;
uint8_t mcusr_at_boot __attribute__((section(".noinit")));

/* Read the reset cause and stop the watchdog before anything else: after a watchdog reset it
 * stays enabled at its shortest period and would reset the chip again during start-up. */
void early_init(void) __attribute__((naked, used, section(".init3")));
void early_init(void) {
    mcusr_at_boot = MCUSR;
    MCUSR = 0;
    wdt_disable();
}

static uint32_t now_us_isr(void) { /* interrupts off */
    uint16_t t = TCNT1;
    uint32_t f = frames;
    if ((TIFR1 & _BV(OCF1A)) && t < FRAME_COUNTS / 2) f++; /* frame start not yet serviced */
    return f * 20000UL + t / 2 - skipped_us;
}

static uint32_t now_us(void *ctx) {
    (void)ctx;
    uint8_t s = SREG;
    cli();
    uint32_t t = now_us_isr();
    SREG = s;
    return t;
}

static void send(void *ctx, const uint8_t *frame, uint8_t len) {
    (void)ctx;
    uint8_t used = (uint8_t)(tx_head - tx_tail) & (TX_SIZE - 1);
    if ((uint8_t)(TX_SIZE - 1 - used) < len) return; /* host not reading: drop the whole frame */
    for (uint8_t i = 0; i < len; i++) {
        tx_buf[tx_head] = frame[i];
        tx_head = (tx_head + 1) & (TX_SIZE - 1);
    }
    UCSR0B |= _BV(UDRIE0);
}

ISR(USART_RX_vect) {
    uint8_t b = UDR0, next = (rx_head + 1) & (RX_SIZE - 1);
    if (next == rx_tail) {
        if (rx_lost != 0xFFFF) rx_lost++;
        return;
    }
    rx_buf[rx_head] = b;
    rx_head = next;
}

ISR(USART_UDRE_vect) {
    if (tx_head == tx_tail) {
        UCSR0B &= (uint8_t)~_BV(UDRIE0);
        return;
    }
    UDR0 = tx_buf[tx_tail];
    tx_tail = (tx_tail + 1) & (TX_SIZE - 1);
}

ISR(TIMER0_COMPA_vect) { ms_clock++; }

ISR(TIMER1_COMPA_vect) { /* frame start */
    PORTB |= _BV(PB1);
    phase = 1;
    cur_steer = next_steer;
    cur_esc = next_esc;
    OCR1B = cur_steer;
    frames++;
}

ISR(TIMER1_COMPB_vect) {
    if (phase == 1) {
        PORTB = (uint8_t)((PORTB & ~_BV(PB1)) | _BV(PB2));
        phase = 2;
        OCR1B = cur_steer + cur_esc;
    } else {
        PORTB &= (uint8_t)~_BV(PB2);
        phase = 0;
        OCR1B = 0xFFFF; /* beyond TOP: no match until the next frame start sets it */
    }
}

ISR(INT0_vect) {
    uint32_t t = now_us_isr();
    if (enc_ticks) enc_interval_us = t - enc_last_us;
    enc_last_us = t;
    enc_ticks++;
}

static uint32_t now_ms(void) {
    cli();
    uint32_t t = ms_clock;
    sei();
    return t;
}

static void set_outputs(void) { /* latched at the next frame start */
    uint16_t a = (uint16_t)(core.steer_us * 2), b = (uint16_t)(core.esc_us * 2);
    cli();
    next_steer = a;
    next_esc = b;
    sei();
}

/* After the failsafe: start a fresh 20 ms frame now, so the neutral pulse follows within
 * microseconds instead of up to a whole frame later. Only between pulses (both pins low), so no
 * pulse is ever cut short; during a pulse the next tick (1 ms later) tries again. */
static uint8_t restart_frame(void) {
    cli();
    uint8_t done = 0;
    uint16_t t = TCNT1;
    if (phase == 0 && t < FRAME_COUNTS - 200) {
        TCNT1 = FRAME_COUNTS - 20;
        skipped_us += (uint16_t)(FRAME_COUNTS - 20 - t) / 2;
        done = 1;
    }
    sei();
    return done;
}

int main(void) {
    uint8_t boot_flags = (mcusr_at_boot & _BV(WDRF)) ? RC_FLAG_WDT_RESET : 0;
    rc_init(&core, 0, boot_flags);
    rc_io_t io = {send, now_us, 0};

    /* Servo outputs: neutral from the first pulse */
    DDRB |= _BV(PB1) | _BV(PB2);
    OCR1A = FRAME_COUNTS - 1;
    OCR1B = 0xFFFF;
    TCCR1A = 0;
    TCCR1B = _BV(WGM12) | _BV(CS11); /* CTC, prescaler 8: 0.5 us */
    TIMSK1 = _BV(OCIE1A) | _BV(OCIE1B);
    /* 1 kHz tick: CTC, prescaler 64, 250 counts */
    TCCR0A = _BV(WGM01);
    OCR0A = 249;
    TCCR0B = _BV(CS01) | _BV(CS00);
    TIMSK0 = _BV(OCIE0A);
    /* encoder: INT0 on rising edges, pull-up on */
    PORTD |= _BV(PD2);
    EICRA = _BV(ISC01) | _BV(ISC00);
    EIMSK = _BV(INT0);
    /* UART: 115200 8N1, double speed (UBRR 16: +2.1 %, as every Arduino at this rate) */
    UCSR0A = _BV(U2X0);
    UBRR0 = (uint16_t)((F_CPU / (8UL * BAUD)) - 1);
    UCSR0B = _BV(RXEN0) | _BV(TXEN0) | _BV(RXCIE0);
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00);

    wdt_enable(WDTO_60MS);
    set_sleep_mode(SLEEP_MODE_IDLE);
    sei();

    uint32_t last_ms = 0;
    uint8_t restart_pending = 0;
    for (;;) {
        wdt_reset();
        uint8_t changed = 0;
        cli();
        core.ticks = enc_ticks;
        core.last_edge_us = enc_last_us;
        core.edge_interval_us = enc_interval_us;
        core.rx_overflows = rx_lost;
        sei();
        while (rx_tail != rx_head) {
            uint8_t b = rx_buf[rx_tail];
            rx_tail = (rx_tail + 1) & (RX_SIZE - 1);
            rc_rx_byte(&core, &io, b, now_ms());
            changed = 1;
        }
        uint32_t ms = now_ms();
        if (ms != last_ms) {
            last_ms = ms;
            if (rc_tick(&core, &io, ms)) {
                changed = 1;
                restart_pending = 1;
                uint8_t out[RC_MAX_FRAME + 1];
                send(0, out, rc_telemetry(&core, &io, out)); /* tell the host at once */
            }
        }
        if (changed) set_outputs();
        if (restart_pending && restart_frame()) restart_pending = 0;
        cli();
        if (rx_tail == rx_head && ms_clock == last_ms) {
            sleep_enable();
            sei(); /* the instruction after sei runs before any interrupt: no lost wake-up */
            sleep_cpu();
            sleep_disable();
        }
        sei();
    }
}
