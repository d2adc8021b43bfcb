#include "agent/base/uv_handle.h"

#include <gtest/gtest.h>

#include "agent/base/event_loop.h"

namespace mi {
namespace {

TEST(UvHandleTest, InitOpensAndCloseFreesInTheCallback) {
  EventLoop loop;
  {
    UvHandle<uv_timer_t> timer;
    EXPECT_EQ(timer.state(), UvHandle<uv_timer_t>::State::kUninit);
    int owner = 0;
    ASSERT_EQ(timer.Init(uv_timer_init, loop.uv(), &owner), 0);
    EXPECT_TRUE(timer.is_open());
    EXPECT_EQ(timer.get()->data, &owner);
    timer.Close();
    EXPECT_EQ(timer.state(), UvHandle<uv_timer_t>::State::kClosing);
    EXPECT_EQ(timer.get(), nullptr);
    timer.Close();  // idempotent
  }
  EXPECT_TRUE(loop.Close()) << "the box is freed in the close callback, the loop ends clean";
}

TEST(UvHandleTest, NeverInitialisedIsFreedWithoutTheLoop) {
  EventLoop loop;
  { UvHandle<uv_tcp_t> tcp; }
  EXPECT_TRUE(loop.Close());
}

TEST(UvHandleTest, InitWithExtraArguments) {
  EventLoop loop;
  {
    UvHandle<uv_async_t> async;
    ASSERT_EQ(async.Init(uv_async_init, loop.uv(), nullptr, [](uv_async_t*) {}), 0);
    EXPECT_TRUE(async.is_open());
  }
  EXPECT_TRUE(loop.Close());
}

TEST(UvHandleTest, CloseResetOnAnUnconnectedTcpHandleStillCloses) {
  EventLoop loop;
  {
    UvHandle<uv_tcp_t> tcp;
    ASSERT_EQ(tcp.Init(uv_tcp_init, loop.uv(), nullptr), 0);
    tcp.CloseReset();
    EXPECT_EQ(tcp.state(), UvHandle<uv_tcp_t>::State::kClosing);
    tcp.CloseReset();
  }
  EXPECT_TRUE(loop.Close());
}

}  // namespace
}  // namespace mi
