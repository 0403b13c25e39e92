#include <gtest/gtest.h>
#include "core/dtype.h"
TEST(DType, Bf16RoundTrip) { EXPECT_EQ(xv::bf16_to_f32(xv::f32_to_bf16(1.0f)), 1.0f); }
