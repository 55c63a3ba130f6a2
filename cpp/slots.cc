#include "slots.h"

#include <cstring>

namespace sb {

size_t result_buffer_size(const Core &core) { return 8 * core.max_payload + 8192; }

size_t hook_buffer_size(const Core &core) { return core.max_payload + 2048; }

void pack_result(const SubmitResult &res, size_t to_len, double *in, char *o) {
  const mesibo_message_params_t &p = res.params;
  in[INFO_VERDICT] = res.verdict;
  in[INFO_OP] = res.op;
  in[INFO_FORMAT] = res.format;
  in[INFO_ID] = static_cast<double>(p.id);
  in[INFO_REFID] = static_cast<double>(p.refid);
  in[INFO_GROUPID] = static_cast<double>(p.groupid);
  in[INFO_FLAGS] = static_cast<double>(p.flags);
  in[INFO_TYPE] = static_cast<double>(p.type);
  in[INFO_EXPIRY] = static_cast<double>(p.expiry);
  in[INFO_STATUS] = static_cast<double>(p.status);
  in[INFO_UFLAGS] = static_cast<double>(p.uflags);
  in[INFO_TOKEN] = static_cast<double>(res.token);
  auto put = [&o](const char *src, size_t n) {
    if (n) std::memcpy(o, src, n);
    o += n;
  };
  put(res.frame, res.frame_len);
  put(res.frame2, res.frame2_len);
  put(res.payload, res.payload_len);
  put(p.to, to_len);
  put(res.ack, res.ack_len);
  in[INFO_FRAME_LEN] = static_cast<double>(res.frame_len);
  in[INFO_FRAME2_LEN] = static_cast<double>(res.frame2_len);
  in[INFO_PAYLOAD_LEN] = static_cast<double>(res.payload_len);
  in[INFO_TO_LEN] = static_cast<double>(to_len);
  in[INFO_ACK_LEN] = static_cast<double>(res.ack_len);
}

bool unpack_result(const double *in, const char *o, size_t out_len, std::string &to, SubmitResult &res) {
  size_t fl = size_t(in[INFO_FRAME_LEN]), f2 = size_t(in[INFO_FRAME2_LEN]), pl = size_t(in[INFO_PAYLOAD_LEN]),
         tl = size_t(in[INFO_TO_LEN]), al = size_t(in[INFO_ACK_LEN]);
  if (fl + f2 + pl + tl + al > out_len) return false;
  res = SubmitResult{};
  res.op = int(in[INFO_OP]);
  res.format = int(in[INFO_FORMAT]);
  res.verdict = int(in[INFO_VERDICT]);
  res.token = uint64_t(in[INFO_TOKEN]);
  mesibo_message_params_t &p = res.params;
  p.id = mesibo_uint_t(in[INFO_ID]);
  p.refid = mesibo_uint_t(in[INFO_REFID]);
  p.groupid = mesibo_uint_t(in[INFO_GROUPID]);
  p.flags = mesibo_uint_t(in[INFO_FLAGS]);
  p.type = mesibo_uint_t(in[INFO_TYPE]);
  p.expiry = mesibo_uint_t(in[INFO_EXPIRY]);
  p.status = mesibo_uint_t(in[INFO_STATUS]);
  p.uflags = mesibo_uint_t(in[INFO_UFLAGS]);
  res.frame = o, res.frame_len = fl;
  res.frame2 = o + fl, res.frame2_len = f2;
  res.payload = o + fl + f2, res.payload_len = pl;
  to.assign(o + fl + f2 + pl, tl);
  p.to = &to[0];
  res.ack = o + fl + f2 + pl + tl, res.ack_len = al;
  return true;
}

SubmitResult completion_result(Completion &c) {
  SubmitResult r;
  r.op = WIRE_OP_MESSAGE;
  r.format = c.format;
  r.verdict = c.verdict;
  r.token = c.token;
  r.params = c.params;
  r.params.to = &c.to[0];
  r.params.from = &c.from[0];
  r.payload = c.payload.data();
  r.payload_len = c.payload.size();
  r.frame = c.frame.data();
  r.frame_len = c.frame.size();
  r.frame2 = c.frame2.data();
  r.frame2_len = c.frame2.size();
  r.ack = c.ack.data();
  r.ack_len = c.ack.size();
  return r;
}

void pack_hook(const mesibo_message_params_t *p, const ChainMsg *cm, const mesibo_user_t *user, double *h, char *b,
               size_t cap) {
  const char *from = nullptr, *to = nullptr;
  if (p) {
    h[HK_ID] = static_cast<double>(p->id);
    h[HK_REFID] = static_cast<double>(p->refid);
    h[HK_GROUPID] = static_cast<double>(p->groupid);
    h[HK_FLAGS] = static_cast<double>(p->flags);
    h[HK_TYPE] = static_cast<double>(p->type);
    h[HK_EXPIRY] = static_cast<double>(p->expiry);
    h[HK_UFLAGS] = static_cast<double>(p->uflags);
    h[HK_STATUS] = static_cast<double>(p->status);
    from = p->from;
    to = p->to;
  }
  if (user) {
    h[HK_ONLINE] = user->online;
    h[HK_FLAGS] = static_cast<double>(user->flags);
    from = user->address;
  }
  size_t fl = from ? std::strlen(from) : 0, tl = to ? std::strlen(to) : 0, pl = cm ? cm->len : 0;
  if (fl + tl + pl > cap) pl = 0;
  if (fl) std::memcpy(b, from, fl);
  if (tl) std::memcpy(b + fl, to, tl);
  if (pl) std::memcpy(b + fl + tl, cm->payload, pl);
  h[HK_FROM_LEN] = static_cast<double>(fl);
  h[HK_TO_LEN] = static_cast<double>(tl);
  h[HK_PAYLOAD_LEN] = static_cast<double>(pl);
}

}  // namespace sb
