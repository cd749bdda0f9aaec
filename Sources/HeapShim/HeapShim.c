#include "HeapShim.h"

#if __has_include(<malloc.h>)
#include <malloc.h>
#endif

// __GLIBC__ comes from the C library's own headers (malloc.h above), not from the compiler.
#if defined(__GLIBC__)
size_t gh_heap_free_bytes(void) { return mallinfo2().fordblks; }
int gh_heap_return_free(void) { return malloc_trim(0); }
#else
size_t gh_heap_free_bytes(void) { return 0; }
int gh_heap_return_free(void) { return 0; }
#endif
