/* Shared memory for the tables the master maps before forking (rate limits,
 * metrics, concurrency slots): anonymous MAP_SHARED, so every worker inherits
 * the same physical pages and no file or name has to be cleaned up.
 */
#ifndef FASTGW_SHM_H
#define FASTGW_SHM_H

#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

/* `nbytes` of zeroed shared memory, or NULL. Every page is written once here
 * (they are zero already): the table is resident from the start instead of
 * faulting in on the request path as keys and slots are first touched. */
static inline void *fg_shared_map(size_t nbytes)
{
    void *mem = mmap(NULL, nbytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return NULL;
    memset(mem, 0, nbytes);
    return mem;
}

static inline void fg_shared_unmap(void *mem, size_t nbytes)
{
    munmap(mem, nbytes);
}

#endif
