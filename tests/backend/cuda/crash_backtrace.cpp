// Linked into the CUDA test binaries: a crash (SIGSEGV, SIGFPE, SIGBUS) prints the native backtrace to stderr before
// the process dies, so a device run that has no debugger still says where (the packed binaries are stripped: each
// frame is binary(+offset), which `addr2line -f -e` or gdb's `info symbol` resolves against the unstripped binary of
// the same build). Test support only.
#include <csignal>
#include <initializer_list>

#include <execinfo.h>
#include <unistd.h>

namespace {

void print_backtrace_and_die(int sig) {
  void* frames[64];
  const int n = backtrace(frames, 64);
  static const char kHeader[] = "\n== crash: native backtrace\n";
  (void)!write(2, kHeader, sizeof(kHeader) - 1);
  backtrace_symbols_fd(frames, n, 2);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

const bool g_installed = [] {
  for (int sig : {SIGSEGV, SIGFPE, SIGBUS}) std::signal(sig, print_backtrace_and_die);
  return true;
}();

}  // namespace
