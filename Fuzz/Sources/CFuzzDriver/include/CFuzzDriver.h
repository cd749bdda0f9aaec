#ifndef GATEHOUSE_FUZZ_DRIVER_H
#define GATEHOUSE_FUZZ_DRIVER_H
#include <stddef.h>
#include <stdint.h>

/// libFuzzer's entry for programs that have a main of their own: runs the fuzzer with the
/// command line and the test callback. (It is in libFuzzer, linked by -sanitize=fuzzer.)
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
