/* A tensor view: element type, shape and a pointer to the bytes.
 *
 * A view owns nothing. The bytes may lie in the mapped GGUF file, in a
 * shared-memory slot a loader filled, or in a test's buffer: the compute code
 * neither knows nor cares, which is what lets weights be streamed layer by
 * layer. Rows are ne[0] elements of `type`, stored contiguously; a 2-D matrix
 * has ne[1] rows. Unused dimensions are 1. An absent optional tensor (a bias
 * the architecture may or may not have) is a view with data == NULL. */
#ifndef SL_MODEL_TENSOR_H
#define SL_MODEL_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "model/dtype.h"

typedef struct sl_tensor {
    uint32_t type; /* an sl_dtype id */
    int64_t ne[4]; /* dims, innermost first */
    const void *data;
} sl_tensor;

/* Bytes of one row (ne[0] elements). The shape was validated when the view
 * was made (model/model.c), so this cannot fail. */
static inline size_t sl_tensor_row_bytes(const sl_tensor *t)
{
    return (size_t)sl_dtype_bytes(t->type, (uint64_t)t->ne[0]);
}

#endif
