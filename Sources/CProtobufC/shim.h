#include <protobuf-c/protobuf-c.h>

/// A ProtobufCBuffer with a context pointer, so that a Swift `append` callback can gather the
/// packed message as segments instead of copying large `bytes` fields.
typedef struct fedcoord_gather_buffer {
    ProtobufCBuffer base;
    void *context;
} fedcoord_gather_buffer;
