/* rcsim: the RC-car firmware's board, in simavr. Runs the firmware ELF on a simulated ATmega328P
 * and wires it to the world:
 *   - UART0 <-> a pseudo-terminal (printed on stdout as "pty PATH"): robolearn's driver, or any
 *     serial program, talks to the firmware through it exactly as to a USB-serial Arduino;
 *   - the steering (PB1, D9) and ESC (PB2, D10) pins are watched and every pulse's width is
 *     printed as "P <t_us> <S|E> <width_us>" (t = simulated time of the falling edge);
 *   - stdin takes "T <ticks> <period_us>": emit encoder edges on PD2 (INT0) until the total since
 *     start reaches <ticks>, spread over <period_us>; "R": reset the chip (what the USB-serial
 *     adapter's DTR line does when a port opens); "Q" or end of input: quit.
 * Simulated time tracks wall time: whenever the firmware sleeps (and at every poll) the program
 * waits until the wall clock catches up, so timing figures measured here are real. When the
 * simulation falls behind (this process descheduled on a busy machine, or simavr slower than
 * the chip), it does not race to catch up: it slips, keeping at most MAX_LAG_NS of lag, as if the
 * board had paused. Racing would stretch the simulated gap between two host commands by the lag
 * (the first injected late, the next on time) and fire the firmware's 80 ms failsafe for a host
 * that was never late; a full test suite on 2 cores did exactly that. Every slip is logged as
 * "L <t_us> <slip_us>".
 * --log FILE writes every byte fed to the UART ("R <t_us> <count>") and every pulse ("P ...") with
 * its simulated time, for latency measurements. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "avr_ioport.h"
#include "avr_uart.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "sim_time.h"

#define POLL_US 500
#define EDGE_HIGH_US 20
#define MAX_LAG_NS 2000000LL

static avr_t *avr;
static int master = -1;
static FILE *logf;
static uint64_t rx_count;
static int xon = 1;
static uint8_t inq[8192];
static size_t in_head, in_tail;
static int64_t wall0; /* ns of CLOCK_MONOTONIC at simulated cycle cycle0, moved on by slips */
static avr_cycle_count_t cycle0;
static avr_irq_t *uart_in, *enc_pin;
static avr_cycle_count_t rise[2];
static uint64_t enc_target, enc_emitted;
static avr_cycle_count_t enc_spacing;
static int enc_active, quit, reset_requested, need_poll;
static void (*core_reset)(avr_t *);
static char line[256];
static size_t line_len;

static uint64_t t_us(avr_cycle_count_t c) { return c * 1000000ULL / avr->frequency; }

static int64_t now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
}

/* Wait until the wall clock reaches simulated cycle c; slip when more than MAX_LAG_NS behind. */
static void sync_to(avr_cycle_count_t c) {
    int64_t sim_ns = (int64_t)((c - cycle0) * 1000000000ULL / avr->frequency);
    int64_t ahead = sim_ns - (now_ns() - wall0);
    if (ahead > 20000) {
        struct timespec d = {ahead / 1000000000LL, ahead % 1000000000LL};
        nanosleep(&d, NULL);
    } else if (ahead < -MAX_LAG_NS) {
        int64_t slip = -ahead - MAX_LAG_NS;
        wall0 += slip;
        if (logf) fprintf(logf, "L %llu %lld\n", (unsigned long long)t_us(c), (long long)(slip / 1000));
    }
}

static void on_sleep(avr_t *a, avr_cycle_count_t how_long) { sync_to(a->cycle + how_long); }

static void on_xon(struct avr_irq_t *irq, uint32_t v, void *p) { (void)irq; (void)v; (void)p; xon = 1; }
static void on_xoff(struct avr_irq_t *irq, uint32_t v, void *p) { (void)irq; (void)v; (void)p; xon = 0; }

static void on_uart_out(struct avr_irq_t *irq, uint32_t value, void *p) {
    (void)irq; (void)p;
    uint8_t b = (uint8_t)value;
    if (write(master, &b, 1) != 1) { /* nobody reading and the pty is full: the byte is lost */ }
}

static void on_pin(struct avr_irq_t *irq, uint32_t value, void *param) {
    (void)irq;
    int ch = (int)(intptr_t)param;
    if (value) {
        rise[ch] = avr->cycle;
    } else if (rise[ch]) {
        uint64_t width = t_us(avr->cycle - rise[ch]);
        rise[ch] = 0;
        printf("P %llu %c %llu\n", (unsigned long long)t_us(avr->cycle), ch ? 'E' : 'S',
               (unsigned long long)width);
        fflush(stdout);
        if (logf)
            fprintf(logf, "P %llu %c %llu\n", (unsigned long long)t_us(avr->cycle),
                    ch ? 'E' : 'S', (unsigned long long)width);
    }
}

static avr_cycle_count_t edge_fall(avr_t *a, avr_cycle_count_t when, void *p) {
    (void)a; (void)when; (void)p;
    avr_raise_irq(enc_pin, 0);
    return 0;
}

static avr_cycle_count_t edge_rise(avr_t *a, avr_cycle_count_t when, void *p) {
    (void)p;
    if (enc_emitted >= enc_target) {
        enc_active = 0;
        return 0;
    }
    avr_raise_irq(enc_pin, 1);
    avr_cycle_timer_register_usec(a, EDGE_HIGH_US, edge_fall, NULL);
    enc_emitted++;
    if (enc_emitted >= enc_target) {
        enc_active = 0;
        return 0;
    }
    return when + enc_spacing;
}

static void command(const char *s) {
    unsigned long long ticks, period;
    if (sscanf(s, "T %llu %llu", &ticks, &period) == 2) {
        if (ticks <= enc_emitted) return;
        enc_target = ticks;
        avr_cycle_count_t span = avr_usec_to_cycles(avr, period ? period : 1);
        enc_spacing = span / (ticks - enc_emitted);
        uint64_t min = avr_usec_to_cycles(avr, 2 * EDGE_HIGH_US);
        if (enc_spacing < min) enc_spacing = min;
        if (!enc_active) {
            enc_active = 1;
            avr_cycle_timer_register(avr, enc_spacing, edge_rise, NULL);
        }
    } else if (s[0] == 'R') {
        reset_requested = 1; /* not from inside a cycle timer: the reset clears them all */
    } else if (s[0] == 'Q') {
        quit = 1;
    }
}

static void read_stdin(void) {
    char buf[256];
    ssize_t n = read(0, buf, sizeof buf);
    if (n == 0) quit = 1; /* the emulator that started us is gone */
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n') {
            line[line_len] = 0;
            command(line);
            line_len = 0;
        } else if (line_len < sizeof line - 1) {
            line[line_len++] = buf[i];
        }
    }
}

static avr_cycle_count_t poll(avr_t *a, avr_cycle_count_t when, void *p) {
    (void)p;
    sync_to(when);
    if (in_head == in_tail) in_head = in_tail = 0;
    ssize_t n = read(master, inq + in_tail, sizeof inq - in_tail);
    if (n > 0) in_tail += (size_t)n;
    while (xon && in_head < in_tail) {
        avr_raise_irq(uart_in, inq[in_head++]);
        rx_count++;
        if (logf) fprintf(logf, "R %llu %llu\n", (unsigned long long)t_us(a->cycle),
                          (unsigned long long)rx_count);
    }
    read_stdin();
    if (logf) fflush(logf); /* whole lines for readers, at most one poll late */
    return when + avr_usec_to_cycles(a, POLL_US);
}

/* Every reset (ours, or the firmware's watchdog): the chip's cycle timers are gone, so the poll
 * timer is armed again from the main loop, and pulse and encoder state restart. */
static void on_reset(avr_t *a) {
    if (core_reset) core_reset(a);
    need_poll = 1;
    enc_active = 0;
    enc_target = enc_emitted;
    rise[0] = rise[1] = 0;
    if (logf) fprintf(logf, "X %llu reset\n", (unsigned long long)t_us(a->cycle));
}

int main(int argc, char **argv) {
    const char *fw = NULL, *log_path = NULL, *mcu = "atmega328p";
    uint32_t freq = 16000000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--log") && i + 1 < argc) log_path = argv[++i];
        else if (!strcmp(argv[i], "--mcu") && i + 1 < argc) mcu = argv[++i];
        else if (!strcmp(argv[i], "--freq") && i + 1 < argc) freq = (uint32_t)atol(argv[++i]);
        else fw = argv[i];
    }
    if (!fw) {
        fprintf(stderr, "usage: rcsim FIRMWARE.elf [--mcu atmega328p] [--freq 16000000] "
                        "[--log FILE]\n");
        return 2;
    }
    elf_firmware_t f;
    memset(&f, 0, sizeof f);
    if (elf_read_firmware(fw, &f)) {
        fprintf(stderr, "rcsim: cannot read firmware %s\n", fw);
        return 1;
    }
    avr = avr_make_mcu_by_name(mcu);
    if (!avr) {
        fprintf(stderr, "rcsim: unknown MCU %s\n", mcu);
        return 1;
    }
    avr_init(avr);
    avr_load_firmware(avr, &f);
    avr->frequency = freq;
    avr->sleep = on_sleep;
    core_reset = avr->reset;
    avr->reset = on_reset;
    avr->log = 0;
    if (log_path && !(logf = fopen(log_path, "w"))) {
        fprintf(stderr, "rcsim: cannot write %s: %s\n", log_path, strerror(errno));
        return 1;
    }

    master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) || unlockpt(master)) {
        fprintf(stderr, "rcsim: no pseudo-terminal: %s\n", strerror(errno));
        return 1;
    }
    const char *slave_name = ptsname(master);
    /* Keep one slave descriptor open for our whole life: when the driver closes its end, the
     * master then sees no hang-up (which select() would report forever, spinning a core). */
    int keep = open(slave_name, O_RDWR | O_NOCTTY);
    struct termios tio;
    tcgetattr(keep, &tio);
    cfmakeraw(&tio);
    cfsetspeed(&tio, B115200);
    tcsetattr(keep, TCSANOW, &tio);
    fcntl(master, F_SETFL, O_NONBLOCK);
    fcntl(0, F_SETFL, O_NONBLOCK);

    uint32_t flags = 0;
    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0'), &flags);
    flags &= ~AVR_UART_FLAG_STDIO; /* bytes go to the pty, not the console */
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0'), &flags);
    uart_in = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_INPUT);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUTPUT),
                            on_uart_out, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XON),
                            on_xon, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0'), UART_IRQ_OUT_XOFF),
                            on_xoff, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('B'), 1), on_pin,
                            (void *)0);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('B'), 2), on_pin,
                            (void *)1);
    enc_pin = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 2);

    printf("pty %s\n", slave_name);
    fflush(stdout);
    wall0 = now_ns();
    cycle0 = avr->cycle;
    avr_cycle_timer_register_usec(avr, POLL_US, poll, NULL);
    while (!quit) {
        if (reset_requested) {
            reset_requested = 0;
            avr_reset(avr);
        }
        if (need_poll) {
            need_poll = 0;
            avr_cycle_timer_register_usec(avr, POLL_US, poll, NULL);
        }
        int state = avr_run(avr);
        if (state == cpu_Done || state == cpu_Crashed) {
            fprintf(stderr, "rcsim: the firmware stopped (state %d) at %llu us\n", state,
                    (unsigned long long)t_us(avr->cycle));
            break;
        }
    }
    if (logf) fclose(logf);
    close(keep);
    return 0;
}
