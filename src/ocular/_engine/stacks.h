/* stacks.h - shadow stacks from the real ones (stacks.c). GIL held. */
#ifndef OCULAR_STACKS_H
#define OCULAR_STACKS_H

#include <stdint.h>

/* Every thread with Python frames begins a stretch with its shadow stack
 * built from its real top frames (threads whose shadow stack is not empty are
 * left alone). Returns the tick the stretches begin at, taken after reading
 * the frames. */
uint64_t stacks_adopt_all(void);

/* Before threads_close_all: note, for every open shadow frame, the
 * instruction its real frame is at, where its segment is to end. */
void stacks_close_all(void);

#endif
