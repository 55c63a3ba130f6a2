// sb::pack_result, sb::completion_result and sb::pack_hook: the layout the
// core shares with JavaScript (lib/native.ts Info and HookSlot read it).
// Buffers are heap blocks of exactly the size asked for, so the address
// sanitizer reports a write past the end.
#include "slots.h"

#include <memory>
#include <string>

#include "check.h"

using namespace sb;

namespace {

std::string at(const char *out, double from, double len) {
  return std::string(out + static_cast<size_t>(from), static_cast<size_t>(len));
}

}  // namespace

TEST("pack_result: frame, frame2, payload, destination and the sent frame, one after another, lengths in the slots") {
  SubmitResult r;
  r.op = WIRE_OP_MESSAGE;
  r.format = WIRE_BINARY;
  r.verdict = MESIBO_RESULT_PASS;
  r.token = 7;
  char to[] = "bob";
  r.params.to = to;
  r.params.id = 42;
  r.params.groupid = 9;
  r.params.flags = 5;
  r.frame = "FRAME";
  r.frame_len = 5;
  r.frame2 = "F2";
  r.frame2_len = 2;
  r.payload = "hello";
  r.payload_len = 5;
  r.ack = "ACK!";
  r.ack_len = 4;
  size_t to_len = result_to_len(r);
  CHECK_EQ(to_len, size_t(3));
  size_t n = result_size(r, to_len);
  CHECK_EQ(n, size_t(5 + 2 + 5 + 3 + 4));
  auto out = std::make_unique<char[]>(n);
  double info[INFO_COUNT] = {};
  info[INFO_OUT_GROWN] = 1;  // the embedder's slot: left as it is
  pack_result(r, to_len, info, out.get());
  CHECK_EQ(info[INFO_OUT_GROWN], 1.0);
  CHECK_EQ(info[INFO_ID], 42.0);
  CHECK_EQ(info[INFO_GROUPID], 9.0);
  CHECK_EQ(info[INFO_FLAGS], 5.0);
  CHECK_EQ(info[INFO_FORMAT], double(WIRE_BINARY));
  CHECK_EQ(info[INFO_TOKEN], 7.0);
  double o = 0;
  CHECK_EQ(at(out.get(), o, info[INFO_FRAME_LEN]), std::string("FRAME"));
  o += info[INFO_FRAME_LEN];
  CHECK_EQ(at(out.get(), o, info[INFO_FRAME2_LEN]), std::string("F2"));
  o += info[INFO_FRAME2_LEN];
  CHECK_EQ(at(out.get(), o, info[INFO_PAYLOAD_LEN]), std::string("hello"));
  o += info[INFO_PAYLOAD_LEN];
  CHECK_EQ(at(out.get(), o, info[INFO_TO_LEN]), std::string("bob"));
  o += info[INFO_TO_LEN];
  CHECK_EQ(at(out.get(), o, info[INFO_ACK_LEN]), std::string("ACK!"));
}

TEST("unpack_result reads back what pack_result wrote, and refuses lengths past the buffer") {
  SubmitResult r;
  r.op = WIRE_OP_STATUS;
  r.format = WIRE_JSON;
  r.verdict = MESIBO_RESULT_CONSUMED;
  char to[] = "carol";
  r.params.to = to;
  r.params.id = 12;
  r.params.status = 3;
  r.params.groupid = 4;
  r.frame = "STATUS";
  r.frame_len = 6;
  r.payload = "p";
  r.payload_len = 1;
  r.ack = "A";
  r.ack_len = 1;
  size_t to_len = result_to_len(r), n = result_size(r, to_len);
  double info[INFO_COUNT] = {};
  std::unique_ptr<char[]> out(new char[n]);
  pack_result(r, to_len, info, out.get());
  SubmitResult back;
  std::string to_copy;
  CHECK(unpack_result(info, out.get(), n, to_copy, back));
  CHECK_EQ(back.op, int(WIRE_OP_STATUS));
  CHECK_EQ(back.verdict, int(MESIBO_RESULT_CONSUMED));
  CHECK_EQ(std::string(back.params.to), std::string("carol"));
  CHECK_EQ(back.params.status, mesibo_uint_t(3));
  CHECK_EQ(back.params.groupid, mesibo_uint_t(4));
  CHECK_EQ(std::string(back.frame, back.frame_len), std::string("STATUS"));
  CHECK_EQ(std::string(back.payload, back.payload_len), std::string("p"));
  CHECK_EQ(std::string(back.ack, back.ack_len), std::string("A"));
  CHECK(!unpack_result(info, out.get(), n - 1, to_copy, back));
}

TEST("completion_result: a deferred message's completion reads as the submit it stands for") {
  Completion c;
  c.token = 3;
  c.verdict = MESIBO_RESULT_CONSUMED;
  c.format = WIRE_JSON;
  c.params.id = 11;
  c.to = "carol";
  c.from = "alice";
  c.payload = "p";
  c.frame = "fr";
  c.ack = "a";
  SubmitResult r = completion_result(c);
  CHECK_EQ(r.op, int(WIRE_OP_MESSAGE));
  CHECK_EQ(r.token, uint64_t(3));
  CHECK_EQ(r.verdict, int(MESIBO_RESULT_CONSUMED));
  CHECK_EQ(std::string(r.params.to), std::string("carol"));
  CHECK_EQ(std::string(r.params.from), std::string("alice"));
  CHECK_EQ(r.params.id, mesibo_uint_t(11));
  CHECK_EQ(result_size(r, result_to_len(r)), size_t(2 + 0 + 1 + 5 + 1));
}

TEST("pack_hook: [from][to][payload] for a message, the user for a login, and a payload that does not fit is left out") {
  char from[] = "alice", to[] = "bob", text[] = "hi there";
  mesibo_message_params_t p{};
  p.from = from;
  p.to = to;
  p.id = 5;
  p.flags = 2;
  ChainMsg m;
  m.p = &p;
  m.payload = text;
  m.len = 8;
  double h[HK_COUNT] = {};
  size_t cap = 5 + 3 + 8;
  auto buf = std::make_unique<char[]>(cap);
  pack_hook(&p, &m, nullptr, h, buf.get(), cap);
  CHECK_EQ(h[HK_ID], 5.0);
  CHECK_EQ(h[HK_FLAGS], 2.0);
  CHECK_EQ(std::string(buf.get(), cap), std::string("alicebobhi there"));
  CHECK_EQ(h[HK_PAYLOAD_LEN], 8.0);

  pack_hook(&p, &m, nullptr, h, buf.get(), cap - 1);
  CHECK_EQ(h[HK_FROM_LEN], 5.0);
  CHECK_EQ(h[HK_TO_LEN], 3.0);
  CHECK_EQ(h[HK_PAYLOAD_LEN], 0.0);

  char address[] = "dave";
  mesibo_user_t u{};
  u.address = address;
  u.online = 1;
  u.flags = 4;
  pack_hook(nullptr, nullptr, &u, h, buf.get(), cap);
  CHECK_EQ(h[HK_ONLINE], 1.0);
  CHECK_EQ(h[HK_FLAGS], 4.0);
  CHECK_EQ(h[HK_FROM_LEN], 4.0);
  CHECK_EQ(h[HK_TO_LEN], 0.0);
  CHECK_EQ(std::string(buf.get(), 4), std::string("dave"));
}
