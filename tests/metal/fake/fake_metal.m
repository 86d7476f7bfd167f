/*
 * fake_metal.m — a CPU stand-in for the parts of Foundation and Metal that
 * plugins/metal/backend_metal.m uses, so the real plugin source runs on Linux
 * (GNU Objective-C runtime): buffers are malloc'd memory, a dispatch runs the
 * kernel at once through the C++ harness (fake_kernels.cpp). Declarations come
 * from tests/metal/stubs. Test-only; it models Metal's rules only where noted
 * (no-copy buffers must be page-aligned; unknown kernels and divergent kernels
 * fail the command buffer).
 */
#import <Foundation/Foundation.h>
#import <Metal/Metal.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* GNU runtime (objc/runtime.h is not included: its BOOL differs from the stubs') */
id class_createInstance(Class cls, size_t extra_bytes);
id object_dispose(id object);
size_t class_getInstanceSize(Class cls);

/* fake_kernels.cpp */
int aarmd_fake_kernel_exists(const char *name);
int aarmd_fake_dispatch(const char *name, void *const *bufs, const uint32_t grid[3], const uint32_t tg[3], char *err,
                        size_t errlen);

#define FAKE_BINDINGS 8

/* ---- Foundation ------------------------------------------------------------ */

/* The reference count lives in the extra bytes after the instance. */
static int *rc_of(id o)
{
    return (int *)((char *)o + class_getInstanceSize(*(Class *)o));
}

static id *pool_objs;
static size_t pool_n, pool_cap;

@implementation NSObject
+ (instancetype)alloc
{
    id o = class_createInstance(self, sizeof(int));
    *rc_of(o) = 1;
    return o;
}
+ (instancetype)new
{
    return [[self alloc] init];
}
- (instancetype)init
{
    return self;
}
- (instancetype)retain
{
    (*rc_of(self))++;
    return self;
}
- (oneway void)release
{
    if (--(*rc_of(self)) == 0)
        [self dealloc];
}
- (instancetype)autorelease
{
    if (pool_n == pool_cap) {
        pool_cap = pool_cap ? 2 * pool_cap : 64;
        pool_objs = realloc(pool_objs, pool_cap * sizeof *pool_objs);
    }
    pool_objs[pool_n++] = self;
    return self;
}
- (NSUInteger)retainCount
{
    return (NSUInteger)*rc_of(self);
}
- (void)dealloc
{
    object_dispose(self);
}
@end

/* clang lowers @autoreleasepool to this class on the GNU runtime */
@interface NSAutoreleasePool : NSObject {
    size_t mark;
}
- (void)drain;
@end

@implementation NSAutoreleasePool
- (instancetype)init
{
    mark = pool_n;
    return self;
}
- (void)drain
{
    while (pool_n > mark)
        [pool_objs[--pool_n] release];
    [self release];
}
@end

/* The stubs' classes have no storage (the fragile GNU ABI allows no ivars in
 * extensions): each hands out instances of a private subclass that has. */
@interface FakeString : NSString {
@public
    char *str;
}
@end

@implementation NSString
+ (instancetype)stringWithUTF8String:(const char *)s
{
    FakeString *o = [[FakeString alloc] init];
    o->str = strdup(s ? s : "");
    return [o autorelease];
}
- (const char *)UTF8String
{
    return "";
}
@end

@implementation FakeString
- (const char *)UTF8String
{
    return str;
}
- (void)dealloc
{
    free(str);
    [super dealloc];
}
@end

@interface FakeError : NSError {
@public
    NSString *msg;
}
@end

@implementation NSError
- (NSString *)localizedDescription
{
    return nil;
}
@end

@implementation FakeError
- (NSString *)localizedDescription
{
    return msg;
}
- (void)dealloc
{
    [msg release];
    [super dealloc];
}
@end

static NSError *make_error(const char *text)
{
    FakeError *e = [[FakeError alloc] init];
    e->msg = [[NSString stringWithUTF8String:text] retain];
    return [e autorelease];
}

@interface FakeArray : NSArray {
@public
    id one;
}
@end

@implementation NSArray
- (NSUInteger)count
{
    return 0;
}
- (id)objectAtIndex:(NSUInteger)index
{
    (void)index;
    return nil;
}
@end

@implementation FakeArray
- (NSUInteger)count
{
    return one ? 1 : 0;
}
- (id)objectAtIndex:(NSUInteger)index
{
    return index == 0 ? one : nil;
}
- (void)dealloc
{
    [one release];
    [super dealloc];
}
@end

dispatch_data_t dispatch_data_create(const void *buffer, size_t size, dispatch_queue_t queue,
                                     aarmd_stub_dispatch_destructor destructor)
{
    (void)buffer;
    (void)size;
    (void)queue;
    (void)destructor;
    return (dispatch_data_t)malloc(1);
}

void dispatch_release(void *object)
{
    free(object);
}

@implementation MTLCompileOptions
@end

/* ---- Metal ------------------------------------------------------------------- */

static uint64_t allocated;

@interface FakeBuffer : NSObject <MTLBuffer> {
@public
    char *ptr;
    NSUInteger len;
    int owned;
}
@end

@implementation FakeBuffer
- (void *)contents
{
    return ptr;
}
- (NSUInteger)length
{
    return len;
}
- (id<MTLDevice>)device
{
    return nil;
}
- (void)dealloc
{
    if (owned) {
        allocated -= len;
        free(ptr);
    }
    [super dealloc];
}
@end

@interface FakeFunction : NSObject <MTLFunction> {
@public
    NSString *fname;
}
@end

@implementation FakeFunction
- (NSString *)name
{
    return fname;
}
- (void)dealloc
{
    [fname release];
    [super dealloc];
}
@end

@interface FakeLibrary : NSObject <MTLLibrary>
@end

@implementation FakeLibrary
- (id<MTLFunction>)newFunctionWithName:(NSString *)functionName
{
    if (!aarmd_fake_kernel_exists([functionName UTF8String]))
        return nil;
    FakeFunction *f = [[FakeFunction alloc] init];
    f->fname = [functionName retain];
    return f;
}
@end

@interface FakePipeline : NSObject <MTLComputePipelineState> {
@public
    char kname[64];
}
@end

@implementation FakePipeline
- (NSUInteger)maxTotalThreadsPerThreadgroup
{
    return 1024;
}
- (NSUInteger)threadExecutionWidth
{
    return 32;
}
@end

@interface FakeCommandBuffer : NSObject <MTLCommandBuffer> {
@public
    int failed;
    char err[512];
}
@end

@interface FakeEncoder : NSObject <MTLComputeCommandEncoder> {
@public
    FakeCommandBuffer *cb;
    FakePipeline *pipe;
    void *bind[FAKE_BINDINGS];
    unsigned char bytes[FAKE_BINDINGS][256];
    int ended;
}
@end

@implementation FakeEncoder
- (void)setComputePipelineState:(id<MTLComputePipelineState>)state
{
    pipe = (FakePipeline *)state;
}
- (void)setBuffer:(id<MTLBuffer>)buffer offset:(NSUInteger)offset atIndex:(NSUInteger)index
{
    FakeBuffer *b = (FakeBuffer *)buffer;
    if (index >= FAKE_BINDINGS || !b || offset > b->len) {
        cb->failed = 1;
        snprintf(cb->err, sizeof cb->err, "setBuffer: bad index %lu or offset %lu", (unsigned long)index,
                 (unsigned long)offset);
        return;
    }
    bind[index] = b->ptr + offset;
}
- (void)setBytes:(const void *)p length:(NSUInteger)length atIndex:(NSUInteger)index
{
    if (index >= FAKE_BINDINGS || length > sizeof bytes[0]) {
        cb->failed = 1;
        snprintf(cb->err, sizeof cb->err, "setBytes: bad index %lu or length %lu", (unsigned long)index,
                 (unsigned long)length);
        return;
    }
    memcpy(bytes[index], p, length);
    bind[index] = bytes[index];
}
- (void)dispatchThreadgroups:(MTLSize)g threadsPerThreadgroup:(MTLSize)t
{
    if (cb->failed || ended)
        return;
    if (!pipe) {
        cb->failed = 1;
        snprintf(cb->err, sizeof cb->err, "dispatch without a pipeline");
        return;
    }
    uint32_t grid[3] = {(uint32_t)g.width, (uint32_t)g.height, (uint32_t)g.depth};
    uint32_t tg[3] = {(uint32_t)t.width, (uint32_t)t.height, (uint32_t)t.depth};
    if (aarmd_fake_dispatch(pipe->kname, bind, grid, tg, cb->err, sizeof cb->err))
        cb->failed = 1;
}
- (void)endEncoding
{
    ended = 1;
}
@end

@implementation FakeCommandBuffer
- (id<MTLComputeCommandEncoder>)computeCommandEncoder
{
    FakeEncoder *e = [[FakeEncoder alloc] init];
    e->cb = self;
    return [e autorelease];
}
- (void)commit
{
}
- (void)waitUntilCompleted
{
}
- (MTLCommandBufferStatus)status
{
    return failed ? MTLCommandBufferStatusError : MTLCommandBufferStatusCompleted;
}
- (NSError *)error
{
    return failed ? make_error(err) : nil;
}
@end

@interface FakeQueue : NSObject <MTLCommandQueue>
@end

@implementation FakeQueue
- (id<MTLCommandBuffer>)commandBuffer
{
    return [[[FakeCommandBuffer alloc] init] autorelease];
}
@end

@interface FakeDevice : NSObject <MTLDevice>
@end

static FakeBuffer *new_buffer(void *p, NSUInteger len, int owned)
{
    FakeBuffer *b = [[FakeBuffer alloc] init];
    b->ptr = p;
    b->len = len;
    b->owned = owned;
    if (owned)
        allocated += len;
    return b;
}

@implementation FakeDevice
- (NSString *)name
{
    return [NSString stringWithUTF8String:"Fake Metal device (CPU harness)"];
}
- (uint64_t)recommendedMaxWorkingSetSize
{
    return 8ull << 30;
}
- (NSUInteger)currentAllocatedSize
{
    return (NSUInteger)allocated;
}
- (BOOL)hasUnifiedMemory
{
    return YES;
}
- (NSUInteger)maxBufferLength
{
    return (NSUInteger)1 << 30;
}
- (id<MTLCommandQueue>)newCommandQueue
{
    return [[FakeQueue alloc] init];
}
- (id<MTLBuffer>)newBufferWithLength:(NSUInteger)length options:(MTLResourceOptions)options
{
    (void)options;
    void *p = calloc(1, length ? length : 1);
    return p ? new_buffer(p, length, 1) : nil;
}
- (id<MTLBuffer>)newBufferWithBytes:(const void *)pointer length:(NSUInteger)length options:(MTLResourceOptions)options
{
    (void)options;
    void *p = malloc(length ? length : 1);
    if (!p)
        return nil;
    memcpy(p, pointer, length);
    return new_buffer(p, length, 1);
}
- (id<MTLBuffer>)newBufferWithBytesNoCopy:(void *)pointer
                                   length:(NSUInteger)length
                                  options:(MTLResourceOptions)options
                              deallocator:(void (^)(void *pointer, NSUInteger length))deallocator
{
    (void)options;
    (void)deallocator;
    uintptr_t page = (uintptr_t)getpagesize();
    if ((uintptr_t)pointer % page || length % page || length == 0)
        return nil;   /* Metal's rule: page-aligned start and length */
    return new_buffer(pointer, length, 0);
}
- (id<MTLLibrary>)newLibraryWithData:(dispatch_data_t)data error:(NSError **)error
{
    (void)data;
    if (error)
        *error = make_error("the fake device has no metallib loader");
    return nil;
}
- (id<MTLLibrary>)newLibraryWithSource:(NSString *)source options:(MTLCompileOptions *)options error:(NSError **)error
{
    (void)options;
    if (!source || !strstr([source UTF8String], "kernel void aarmd_attention(")) {
        if (error)
            *error = make_error("source does not hold the aarmd kernels");
        return nil;
    }
    return [[FakeLibrary alloc] init];
}
- (id<MTLComputePipelineState>)newComputePipelineStateWithFunction:(id<MTLFunction>)fn error:(NSError **)error
{
    (void)error;
    FakePipeline *p = [[FakePipeline alloc] init];
    snprintf(p->kname, sizeof p->kname, "%s", [[fn name] UTF8String]);
    return p;
}
@end

id<MTLDevice> MTLCreateSystemDefaultDevice(void)
{
    if (getenv("AARMD_FAKE_METAL_NO_DEVICE"))
        return nil;
    return [[FakeDevice alloc] init];
}

NSArray<id<MTLDevice>> *MTLCopyAllDevices(void)
{
    FakeArray *a = [[FakeArray alloc] init];
    a->one = MTLCreateSystemDefaultDevice();
    return a;
}
