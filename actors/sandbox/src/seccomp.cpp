#include "berth/sandbox/sandbox.hpp"

#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#ifndef CLONE_NEWUSER
#define CLONE_NEWUSER 0x10000000
#endif

namespace berth::sandbox {

namespace {

struct ctx_guard {
  scmp_filter_ctx ctx;
  ~ctx_guard() { seccomp_release(ctx); }
};

}  // namespace

// Flatpak's deny list (flatpak-run.c, setup_seccomp) is the reference: calls that reach the
// kernel's most exposed or most privileged surfaces fail with EPERM; clone3 answers ENOSYS so
// that libc falls back to clone, whose flags the filter can inspect.
result<std::string> seccomp_program() {
  ctx_guard g{seccomp_init(SCMP_ACT_ALLOW)};
  if (!g.ctx) return error{errc::internal, "seccomp_init failed"};
  auto deny = SCMP_ACT_ERRNO(EPERM);
  auto add = [&](int nr, std::uint32_t action) {
    return nr < 0 ? 0 : seccomp_rule_add(g.ctx, action, nr, 0);
  };
  const char* denied[] = {"syslog",
                          "uselib",
                          "acct",
                          "modify_ldt",
                          "quotactl",
                          "add_key",
                          "keyctl",
                          "request_key",
                          "move_pages",
                          "mbind",
                          "get_mempolicy",
                          "set_mempolicy",
                          "migrate_pages",
                          "unshare",  // re-added below with its argument check
                          "mount",
                          "umount",
                          "umount2",
                          "pivot_root",
                          "chroot",
                          "setns",
                          "open_tree",
                          "move_mount",
                          "fsopen",
                          "fsconfig",
                          "fsmount",
                          "fspick",
                          "mount_setattr",
                          "ptrace",
                          "process_vm_readv",
                          "process_vm_writev",
                          "perf_event_open",
                          "bpf",
                          "userfaultfd",
                          "kexec_load",
                          "kexec_file_load",
                          "init_module",
                          "finit_module",
                          "delete_module",
                          "reboot",
                          "swapon",
                          "swapoff",
                          "lookup_dcookie",
                          "open_by_handle_at",
                          "name_to_handle_at",
                          "iopl",
                          "ioperm",
                          "vm86",
                          "vm86old",
                          "nfsservctl",
                          "pciconfig_iobase"};
  for (const char* name : denied) {
    if (std::strcmp(name, "unshare") == 0) continue;
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture
    if (add(nr, deny) != 0) return error{errc::internal, std::string("seccomp rule for ") + name};
  }
  // No new user namespaces: unshare/clone with CLONE_NEWUSER.
  if (seccomp_rule_add(g.ctx, deny, SCMP_SYS(unshare), 1,
                       SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER)) != 0 ||
      seccomp_rule_add(g.ctx, deny, SCMP_SYS(clone), 1,
                       SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER)) != 0)
    return error{errc::internal, "seccomp rule for CLONE_NEWUSER"};
  if (seccomp_rule_add(g.ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) != 0)
    return error{errc::internal, "seccomp rule for clone3"};
  // Terminal injection: TIOCSTI and TIOCLINUX, compared on the low 32 bits of the request (the
  // kernel does, so a request with high bits set must not slip past).
  for (unsigned long req :
       {static_cast<unsigned long>(TIOCSTI), static_cast<unsigned long>(TIOCLINUX)})
    if (seccomp_rule_add(g.ctx, deny, SCMP_SYS(ioctl), 1,
                         SCMP_A1(SCMP_CMP_MASKED_EQ, 0xFFFFFFFFu, req)) != 0)
      return error{errc::internal, "seccomp rule for ioctl"};
  // Only the native ABI: 32-bit or x32 system calls would bypass every rule above.
  seccomp_attr_set(g.ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
  int fd = ::memfd_create("berth-seccomp", MFD_CLOEXEC);
  if (fd < 0) return error{errc::io_error, std::string("memfd_create: ") + errno_text(errno)};
  int rc = seccomp_export_bpf(g.ctx, fd);
  if (rc != 0) {
    ::close(fd);
    return error{errc::internal, "seccomp_export_bpf failed"};
  }
  ::lseek(fd, 0, SEEK_SET);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  if (out.empty()) return error{errc::internal, "empty seccomp program"};
  return out;
}

}  // namespace berth::sandbox
