#ifndef GATEHOUSE_HEAP_SHIM_H
#define GATEHOUSE_HEAP_SHIM_H

#include <stddef.h>

/// Bytes the C heap holds free (glibc's mallinfo2 fordblks, every arena): memory the process
/// keeps but does not use. 0 where the C library cannot tell.
size_t gh_heap_free_bytes(void);

/// Gives the C heap's free pages back to the system (glibc's malloc_trim(0), which also
/// releases whole free pages inside every arena, not only at a heap's top). Returns 1 when it
/// released something.
int gh_heap_return_free(void);

#endif
