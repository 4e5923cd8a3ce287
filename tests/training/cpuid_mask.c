/* LD_PRELOAD shim: this process's CPUID hides instruction sets, so ONNX Runtime picks the kernels of an older CPU.

   CPUID_MASK_ISA=avx2 hides AVX-512, VNNI and AMX; avx512_core hides VNNI and AMX; avx512_vnni hides AMX.
   Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID) makes every CPUID instruction trap; the handler runs the
   real one and clears the hidden bits. ONNX Runtime reads CPUID when it loads, after this constructor. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static unsigned hide7_ebx, hide7_ecx, hide7_edx, hide71_eax, hide71_edx;

static void on_cpuid(int sig, siginfo_t *info, void *context) {
    greg_t *regs = ((ucontext_t *)context)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)regs[REG_RIP];
    unsigned leaf = (unsigned)regs[REG_RAX], subleaf = (unsigned)regs[REG_RCX], a, b, c, d;
    (void)info;
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* a real fault: crash as the process would have */
        signal(sig, SIG_DFL);
        return;
    }
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __cpuid_count(leaf, subleaf, a, b, c, d);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    if (leaf == 7 && subleaf == 0) {
        b &= ~hide7_ebx;
        c &= ~hide7_ecx;
        d &= ~hide7_edx;
    }
    if (leaf == 7 && subleaf == 1) {
        a &= ~hide71_eax;
        d &= ~hide71_edx;
    }
    regs[REG_RAX] = a;
    regs[REG_RBX] = b;
    regs[REG_RCX] = c;
    regs[REG_RDX] = d;
    regs[REG_RIP] += 2; /* CPUID is 0F A2 */
}

__attribute__((constructor)) static void hide_instruction_sets(void) {
    const char *isa = getenv("CPUID_MASK_ISA");
    struct sigaction action;
    if (isa == NULL) return;
    hide7_edx = (1u << 22) | (1u << 24) | (1u << 25); /* AMX-BF16, AMX-TILE, AMX-INT8 */
    hide71_eax = 1u << 4;                             /* AVX-VNNI */
    hide71_edx = 1u << 4;                             /* AVX-VNNI-INT8 */
    if (strcmp(isa, "avx512_core") == 0 || strcmp(isa, "avx2") == 0) hide7_ecx = 1u << 11; /* AVX512-VNNI */
    if (strcmp(isa, "avx2") == 0) hide7_ebx = (1u << 16) | (1u << 17) | (1u << 28) | (1u << 30) | (1u << 31);
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_cpuid;
    action.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &action, NULL);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) { /* no CPUID faulting here: nothing would be hidden */
        fputs("cpuid_mask: arch_prctl(ARCH_SET_CPUID) failed: this CPU or VM has no CPUID faulting\n", stderr);
        _exit(3);
    }
}
