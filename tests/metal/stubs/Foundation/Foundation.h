/*
 * Foundation.h (stub) — declarations only, for `clang -fsyntax-only` of
 * plugins/metal/backend_metal.m on machines without Apple's SDK. It declares
 * exactly what the plugin uses, with Apple's names and signatures; it is not
 * Foundation and nothing links against it. Add a declaration here when the
 * plugin starts using a new API, copying the SDK's signature.
 */
#ifndef AARMD_STUB_FOUNDATION_H
#define AARMD_STUB_FOUNDATION_H

#include <stddef.h>
#include <stdint.h>

/* objc/objc.h */
#ifndef nil
#define nil ((id)0)
#endif
typedef signed char BOOL;
#define YES ((BOOL)1)
#define NO ((BOOL)0)
typedef unsigned long NSUInteger;
typedef long NSInteger;
#define NS_RETURNS_INNER_POINTER __attribute__((objc_returns_inner_pointer))

@class NSString;

@protocol NSObject
- (instancetype)retain;
- (oneway void)release;
- (instancetype)autorelease;
- (NSUInteger)retainCount;
@end

__attribute__((objc_root_class))
@interface NSObject <NSObject> {
    Class isa;
}
+ (instancetype)alloc;
+ (instancetype)new;
- (instancetype)init;
- (instancetype)retain;
- (oneway void)release;
- (instancetype)autorelease;
- (NSUInteger)retainCount;
@end

@interface NSString : NSObject
+ (instancetype)stringWithUTF8String:(const char *)nullTerminatedCString;
@property(readonly) const char *UTF8String NS_RETURNS_INNER_POINTER;
@end

@interface NSError : NSObject
@property(readonly, copy) NSString *localizedDescription;
@end

@interface NSArray<__covariant ObjectType> : NSObject
@property(readonly) NSUInteger count;
- (ObjectType)objectAtIndex:(NSUInteger)index;
@end

/* libdispatch, as much as the plugin uses (Foundation pulls it in on macOS) */
typedef struct dispatch_queue_s *dispatch_queue_t;
typedef struct dispatch_data_s *dispatch_data_t;
typedef void (*aarmd_stub_dispatch_destructor)(void);
#define DISPATCH_DATA_DESTRUCTOR_DEFAULT NULL
dispatch_data_t dispatch_data_create(const void *buffer, size_t size, dispatch_queue_t queue,
                                     aarmd_stub_dispatch_destructor destructor);
void dispatch_release(void *object);

#endif
