// N-API binding of the delivery engine (cpp/router.h). It converts and
// calls; every decision is the engine's. Each call that fills a Batch copies
// it into typed arrays JavaScript keeps (views()), so a call returns a
// number and creates no JavaScript object:
// - head: Float64Array, HEAD_* below;
// - writes: Uint32Array, WRITE_FIELDS per write (conn, off, len, flags:
//   1 binary, 2 delivery, 4 close: Write::close);
// - ops: Float64Array, OP_FIELDS per store operation (OpField below);
// - bytes: Buffer the writes' and operations' offsets point into;
// - recipients: Uint32Array (Batch::recipients);
// - owed: Int32Array over the engine's own array (router_owed), never moved.
// When a batch outgrows an array, a larger one replaces it and head[GROWN]
// is 1: the caller fetches views() again.
#include "delivery_binding.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>

#include "admit.h"
#include "napi_args.h"
#include "router.h"
#include "slots.h"

namespace sb {

namespace {

enum HeadSlot {
  HEAD_STATUS, HEAD_WRITES, HEAD_OPS, HEAD_BYTES, HEAD_COMMIT, HEAD_LIVE_WAIT, HEAD_PER_RECIPIENT,
  HEAD_RECIPIENTS, HEAD_TALKED, HEAD_GROWN, HEAD_OUT_FORMAT, HEAD_COUNT
};
constexpr size_t WRITE_FIELDS = 4;
enum OpField {
  OP_KIND, OP_RECIPIENT, OP_SENDER, OP_ID, OP_REFID, OP_GID, OP_FLAGS, OP_TYPE, OP_EXPIRY, OP_EXPIRES_AT,
  OP_PAYLOAD_OFF, OP_PAYLOAD_LEN, OP_AFTER_COMMIT, OP_STATUS, OP_RECEIPT, OP_KEEP, OP_FIELDS
};
constexpr size_t COUNTER_FIXED = 6;  // then statuses[256]

Napi::Error error(Napi::Env env, const char *code, const std::string &message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

struct State {
  Router router;
  Batch batch;
  napi_env env = nullptr;  // of the call in progress: host callbacks run inside it
  Napi::FunctionReference load_group, inbox_count;
  Napi::ObjectReference core;  // a CoreHandle, or empty: keeps core_ref alive
  CoreRef *core_ref = nullptr;
  Napi::Reference<Napi::Float64Array> info;
  Napi::Reference<Napi::Float64Array> head;
  Napi::Reference<Napi::Uint32Array> writes;
  Napi::Reference<Napi::Float64Array> ops;
  Napi::Reference<Napi::Buffer<char>> bytes;
  Napi::Reference<Napi::Uint32Array> recipients;
  Napi::Reference<Napi::Float64Array> counters;
  Napi::ObjectReference owed;
  double *head_p = nullptr;
  uint32_t *writes_p = nullptr;
  size_t writes_cap = 0;
  double *ops_p = nullptr;
  size_t ops_cap = 0;
  char *bytes_p = nullptr;
  size_t bytes_cap = 0;
  uint32_t *recipients_p = nullptr;
  size_t recipients_cap = 0;
  std::string to_scratch;
  const double *info_p = nullptr;  // the core's info slots (a Float64Array that never moves)
};

bool host_dest_online(void *data, const char *to, size_t len) {
  return router_dest_online(static_cast<State *>(data)->router, std::string_view(to, len));
}

// ms since the epoch, as Date.now().
double wall_clock_ms() {
  using namespace std::chrono;
  return double(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

// A frame as uWebSockets.js gives it (an ArrayBuffer: no view to make per
// frame) or a Uint8Array.
bool frame_bytes(napi_env env, napi_value v, void *&data, size_t &len) {
  bool is_ab = false;
  if (napi_is_arraybuffer(env, v, &is_ab) == napi_ok && is_ab)
    return napi_get_arraybuffer_info(env, v, &data, &len) == napi_ok;
  napi_typedarray_type type;
  return napi_get_typedarray_info(env, v, &type, &len, &data, nullptr, nullptr) == napi_ok && type == napi_uint8_array;
}

bool host_load_group(void *data, uint32_t gid, std::vector<std::string> &members) {
  State &st = *static_cast<State *>(data);
  if (st.load_group.IsEmpty()) return false;
  Napi::Env env(st.env);
  Napi::Value v = st.load_group.Call({Napi::Number::New(env, gid)});
  if (env.IsExceptionPending() || !v.IsArray()) return false;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value m = a.Get(i);
    if (m.IsString()) members.push_back(m.As<Napi::String>().Utf8Value());
  }
  return true;
}

void host_inbox_count(void *data, UserId u, uint64_t &messages, double &bytes) {
  State &st = *static_cast<State *>(data);
  if (st.inbox_count.IsEmpty()) return;
  Napi::Env env(st.env);
  Napi::Value v = st.inbox_count.Call({Napi::Number::New(env, u)});
  if (env.IsExceptionPending() || !v.IsArray()) return;
  Napi::Array a = v.As<Napi::Array>();
  messages = static_cast<uint64_t>(a.Get(0u).ToNumber().Int64Value());
  bytes = a.Get(1u).ToNumber().DoubleValue();
}

size_t host_status_frame(void *data, mesibo_message_params_t *p, int format, std::string &out) {
  State &st = *static_cast<State *>(data);
  Core *core = core_of(st.core_ref);
  if (!core) return wire_encode_status(format == WIRE_BINARY ? WIRE_BINARY : WIRE_JSON, *p, out);
  size_t n = core_status(*core, p, format);
  out.assign(core->ack.data(), n);
  return n;
}

class DeliveryHandle : public Napi::ObjectWrap<DeliveryHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Delivery",
                       {InstanceMethod<&DeliveryHandle::Views>("views"),
                        InstanceMethod<&DeliveryHandle::UserAdd>("userAdd"),
                        InstanceMethod<&DeliveryHandle::UserRemove>("userRemove"),
                        InstanceMethod<&DeliveryHandle::Intern>("intern"),
                        InstanceMethod<&DeliveryHandle::Name>("name"),
                        InstanceMethod<&DeliveryHandle::SetRemote>("setRemote"),
                        InstanceMethod<&DeliveryHandle::SetRemotePumping>("setRemotePumping"),
                        InstanceMethod<&DeliveryHandle::Login>("login"),
                        InstanceMethod<&DeliveryHandle::Logout>("logout"),
                        InstanceMethod<&DeliveryHandle::StoreLive>("storeLive"),
                        InstanceMethod<&DeliveryHandle::BacklogSent>("backlogSent"),
                        InstanceMethod<&DeliveryHandle::BacklogDone>("backlogDone"),
                        InstanceMethod<&DeliveryHandle::BacklogRecheck>("backlogRecheck"),
                        InstanceMethod<&DeliveryHandle::RemoteMessage>("remoteMessage"),
                        InstanceMethod<&DeliveryHandle::RemoteStatus>("remoteStatus"),
                        InstanceMethod<&DeliveryHandle::GroupSet>("groupSet"),
                        InstanceMethod<&DeliveryHandle::GroupForget>("groupForget"),
                        InstanceMethod<&DeliveryHandle::OutFormat>("outFormat"),
                        InstanceMethod<&DeliveryHandle::ModuleMessage>("moduleMessage"),
                        InstanceMethod<&DeliveryHandle::DeliverCopy>("deliverCopy"),
                        InstanceMethod<&DeliveryHandle::QueueAck>("queueAck"),
                        InstanceMethod<&DeliveryHandle::TrackReceipt>("trackReceipt"),
                        InstanceMethod<&DeliveryHandle::InboxForget>("inboxForget"),
                        InstanceMethod<&DeliveryHandle::InboxRemoved>("inboxRemoved"),
                        InstanceMethod<&DeliveryHandle::SetPerRecipient>("setPerRecipient"),
                        InstanceMethod<&DeliveryHandle::Configure>("configure"),
                        InstanceMethod<&DeliveryHandle::Admit>("admit"),
                        InstanceMethod<&DeliveryHandle::CommitFailed>("commitFailed"),
                        InstanceMethod<&DeliveryHandle::CommitBegin>("commitBegin"),
                        InstanceMethod<&DeliveryHandle::Committed>("committed"),
                        InstanceMethod<&DeliveryHandle::Expire>("expire"),
                        InstanceMethod<&DeliveryHandle::Stop>("stop"),
                        InstanceMethod<&DeliveryHandle::Counters>("counters"),
                        InstanceMethod<&DeliveryHandle::LiveCount>("liveCount")});
  }

  // new Delivery(settings, host, core?)
  DeliveryHandle(const Napi::CallbackInfo &info) : Napi::ObjectWrap<DeliveryHandle>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject() || !info[1].IsObject()) {
      error(env, "E_BAD_ARGUMENT", "new Delivery(settings, host, core?) takes two objects").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    auto num = [&](const char *k, double dflt) {
      Napi::Value v = o.Get(k);
      return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : dflt;
    };
    RouterSettings s;
    s.durable = o.Get("durable").ToBoolean().Value();
    s.grace_ms = static_cast<uint64_t>(num("graceMs", 50));
    s.max_inbox_messages = static_cast<uint64_t>(num("maxInboxMessages", 10000));
    s.max_inbox_bytes = num("maxInboxBytes", 64 << 20);
    s.max_connections = static_cast<size_t>(num("maxConnections", 1024));
    s.max_tracked_receipts = static_cast<size_t>(num("maxTrackedReceipts", 1000000));
    s.per_recipient_stages = o.Get("perRecipientStages").ToBoolean().Value();
    s.cluster = o.Get("cluster").ToBoolean().Value();
    s.rate_limit = num("rateLimit", s.rate_limit);
    s.user_rate_limit = num("userRateLimit", s.user_rate_limit);
    st_ = std::make_shared<State>();
    Napi::Object h = info[1].As<Napi::Object>();
    if (h.Get("loadGroup").IsFunction()) st_->load_group = Napi::Persistent(h.Get("loadGroup").As<Napi::Function>());
    if (h.Get("inboxCount").IsFunction()) st_->inbox_count = Napi::Persistent(h.Get("inboxCount").As<Napi::Function>());
    if (info[2].IsObject()) {
      st_->core_ref = core_ref_of(info[2]);
      if (!core_of(st_->core_ref)) {
        error(env, "E_BAD_ARGUMENT", "the third argument must be an open core's native handle").ThrowAsJavaScriptException();
        return;
      }
      st_->core = Napi::Persistent(info[2].As<Napi::Object>());
      st_->info = Napi::Persistent(info[2].As<Napi::Object>().Get("info").As<Napi::Function>()
                                       .Call(info[2], {}).As<Napi::Float64Array>());
      st_->info_p = st_->info.Value().Data();
    }
    RouterHost host;
    host.data = st_.get();
    host.load_group = host_load_group;
    host.inbox_count = host_inbox_count;
    host.status_frame = host_status_frame;
    router_init(st_->router, s, host);
    st_->head = Napi::Persistent(Napi::Float64Array::New(env, HEAD_COUNT));
    st_->head_p = st_->head.Value().Data();
    st_->counters = Napi::Persistent(Napi::Float64Array::New(env, COUNTER_FIXED + 256));
    // The owed counts live in a JavaScript ArrayBuffer the handle keeps:
    // the intake room spends them there, the engine adds to them there.
    size_t n = s.max_connections ? s.max_connections : 1;
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, n * sizeof(int32_t));
    directory_share_owed(st_->router.dir, static_cast<int32_t *>(ab.Data()));
    st_->owed = Napi::Persistent(Napi::Object(env, Napi::Int32Array::New(env, n, ab, 0)));
    Grow(env, *st_, 64, 4096, 16, 64);
    Napi::Object self = info.This().As<Napi::Object>();
    if (!InstallFast(env, self, "route", FastRoute) || !InstallFast(env, self, "submit", FastSubmit))
      error(env, "E_BAD_ARGUMENT", "could not install route() and submit()").ThrowAsJavaScriptException();
  }

 private:
  // The JS-visible arrays, at least this large.
  static bool Grow(Napi::Env env, State &st, size_t writes, size_t bytes, size_t ops, size_t recipients) {
    bool grown = false;
    if (writes > st.writes_cap) {
      st.writes_cap = std::max(writes, st.writes_cap * 2);
      st.writes = Napi::Persistent(Napi::Uint32Array::New(env, st.writes_cap * WRITE_FIELDS));
      st.writes_p = st.writes.Value().Data();
      grown = true;
    }
    if (ops > st.ops_cap) {
      st.ops_cap = std::max(ops, st.ops_cap * 2);
      st.ops = Napi::Persistent(Napi::Float64Array::New(env, st.ops_cap * OP_FIELDS));
      st.ops_p = st.ops.Value().Data();
      grown = true;
    }
    if (bytes > st.bytes_cap) {
      st.bytes_cap = std::max(bytes, st.bytes_cap * 2);
      st.bytes = Napi::Persistent(Napi::Buffer<char>::New(env, st.bytes_cap));
      st.bytes_p = st.bytes.Value().Data();
      grown = true;
    }
    if (recipients > st.recipients_cap) {
      st.recipients_cap = std::max(recipients, st.recipients_cap * 2);
      st.recipients = Napi::Persistent(Napi::Uint32Array::New(env, st.recipients_cap));
      st.recipients_p = st.recipients.Value().Data();
      grown = true;
    }
    return grown;
  }

  // Copies the batch into the JS-visible arrays; `status` into head.
  void Publish(Napi::Env env, double status) { Publish(env, *st_, status); }
  static void Publish(Napi::Env env, State &st, double status) {
    const Batch &b = st.batch;
    bool grown = Grow(env, st, b.writes.size(), b.bytes.size(), b.ops.size(), b.recipients.size());
    uint32_t *w = st.writes_p;
    for (const Write &x : b.writes) {
      *w++ = x.conn;
      *w++ = x.off;
      *w++ = x.len;
      *w++ = uint32_t(x.binary) | uint32_t(x.delivery) << 1 | uint32_t(x.close) << 2;
    }
    double *o = st.ops_p;
    for (const StoreOp &x : b.ops) {
      o[OP_KIND] = x.kind;
      o[OP_RECIPIENT] = x.recipient;
      o[OP_SENDER] = x.sender == kNone ? -1 : double(x.sender);
      o[OP_ID] = x.id;
      o[OP_REFID] = x.refid;
      o[OP_GID] = x.gid;
      o[OP_FLAGS] = x.flags;
      o[OP_TYPE] = x.type;
      o[OP_EXPIRY] = x.expiry;
      o[OP_EXPIRES_AT] = double(x.expires_at);
      o[OP_PAYLOAD_OFF] = x.payload_off;
      o[OP_PAYLOAD_LEN] = x.payload_len;
      o[OP_AFTER_COMMIT] = x.after_commit;
      o[OP_STATUS] = x.status;
      o[OP_RECEIPT] = x.receipt;
      o[OP_KEEP] = x.keep;
      o += OP_FIELDS;
    }
    if (!b.bytes.empty()) std::memcpy(st.bytes_p, b.bytes.data(), b.bytes.size());
    for (size_t i = 0; i < b.recipients.size(); ++i) st.recipients_p[i] = b.recipients[i];
    double *h = st.head_p;
    h[HEAD_STATUS] = status;
    h[HEAD_WRITES] = double(b.writes.size());
    h[HEAD_OPS] = double(b.ops.size());
    h[HEAD_BYTES] = double(b.bytes.size());
    h[HEAD_COMMIT] = b.commit;
    h[HEAD_LIVE_WAIT] = double(b.live_wait_ms);
    h[HEAD_PER_RECIPIENT] = b.per_recipient;
    h[HEAD_RECIPIENTS] = double(b.recipients.size());
    h[HEAD_TALKED] = b.talked;
    h[HEAD_GROWN] = grown;
  }

  static uint32_t U32(const Napi::Value &v) { return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : kNone; }
  static uint32_t Field(const Napi::Value &v) { return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : 0; }
  static ConnId Conn(const Napi::Value &v) {
    if (!v.IsNumber()) return kNone;
    int64_t c = v.As<Napi::Number>().Int64Value();
    return c < 0 ? kNone : static_cast<ConnId>(c);
  }
  static uint64_t Now(const Napi::Value &v) {
    return v.IsNumber() ? static_cast<uint64_t>(v.As<Napi::Number>().DoubleValue()) : 0;
  }
  void Enter(Napi::Env env) { st_->env = env; }

  Napi::Value Views(const Napi::CallbackInfo &info) {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("head", st_->head.Value());
    o.Set("writes", st_->writes.Value());
    o.Set("ops", st_->ops.Value());
    o.Set("bytes", st_->bytes.Value());
    o.Set("recipients", st_->recipients.Value());
    o.Set("owed", st_->owed.Value());
    return o;
  }

  Napi::Value UserAdd(const Napi::CallbackInfo &info) {
    return Napi::Number::New(info.Env(), router_user_add(st_->router, info[0].ToString().Utf8Value()));
  }
  Napi::Value UserRemove(const Napi::CallbackInfo &info) {
    router_user_remove(st_->router, info[0].ToString().Utf8Value());
    return info.Env().Undefined();
  }
  Napi::Value Intern(const Napi::CallbackInfo &info) {
    return Napi::Number::New(info.Env(), directory_intern(st_->router.dir, info[0].ToString().Utf8Value()));
  }
  // name(id) -> the name interned as `id`, or undefined.
  Napi::Value Name(const Napi::CallbackInfo &info) {
    UserId u = U32(info[0]);
    if (u >= st_->router.dir.users.size()) return info.Env().Undefined();
    const std::string &n = st_->router.dir.users[u].name;
    return Napi::String::New(info.Env(), n.data(), n.size());
  }
  // setRemotePumping(user, nodes): how many other nodes have a device of it reading its backlog.
  Napi::Value SetRemotePumping(const Napi::CallbackInfo &info) {
    Enter(info.Env());
    router_set_remote_pumping(st_->router, U32(info[0]), U32(info[1]), st_->batch);
    Publish(info.Env(), 0);
    return info.Env().Undefined();
  }
  // setRemote(user, nodes): how many other nodes have connections of it.
  Napi::Value SetRemote(const Napi::CallbackInfo &info) {
    directory_set_remote(st_->router.dir, U32(info[0]), U32(info[1]));
    return info.Env().Undefined();
  }
  // login(user, binary) -> connection id. The table grows when full (the
  // server's own limits decide how many connections there may be): the
  // owed array then moves, and owedLength() tells JavaScript to fetch
  // views() again.
  Napi::Value Login(const Napi::CallbackInfo &info) {
    Directory &d = st_->router.dir;
    if (d.free_conns.empty()) {
      size_t n = std::max<size_t>(64, d.conns.size() * 2);
      Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(info.Env(), n * sizeof(int32_t));
      directory_grow(d, n, static_cast<int32_t *>(ab.Data()));
      st_->owed = Napi::Persistent(Napi::Object(info.Env(), Napi::Int32Array::New(info.Env(), n, ab, 0)));
    }
    ConnId c = router_login(st_->router, U32(info[0]), info[1].ToBoolean().Value());
    return Napi::Number::New(info.Env(), c == kNone ? -1 : double(c));
  }
  Napi::Value Logout(const Napi::CallbackInfo &info) {
    Enter(info.Env());
    bool last = router_logout(st_->router, Conn(info[0]), st_->batch);
    Publish(info.Env(), last);
    return Napi::Boolean::New(info.Env(), last);
  }
  // storeLive(user): its devices on other nodes changed; its live copies are stored now.
  Napi::Value StoreLive(const Napi::CallbackInfo &info) {
    Enter(info.Env());
    router_store_live(st_->router, U32(info[0]), st_->batch);
    Publish(info.Env(), false);
    return info.Env().Undefined();
  }
  Napi::Value BacklogSent(const Napi::CallbackInfo &info) {
    router_backlog_sent(st_->router, Conn(info[0]), U32(info[1]), U32(info[2]));
    return info.Env().Undefined();
  }
  // backlogDone(conn): what waited for the backlog (statuses, transient copies) is in the batch.
  Napi::Value BacklogDone(const Napi::CallbackInfo &info) {
    router_backlog_done(st_->router, Conn(info[0]), st_->batch);
    Publish(info.Env(), 0);
    return info.Env().Undefined();
  }
  Napi::Value BacklogRecheck(const Napi::CallbackInfo &info) {
    return Napi::Boolean::New(info.Env(), router_backlog_recheck(st_->router, Conn(info[0])));
  }

  // remoteMessage(toUid, fromUid, id, refid, gid, flags, type, expiry, payload, stored, now) -> written: the fields as
  // numbers, not an object: per crossing copy, reading six named properties
  // cost a string lookup each (about 1 µs).
  Napi::Value RemoteMessage(const Napi::CallbackInfo &info) {
    Enter(info.Env());
    mesibo_message_params_t p{};
    p.id = Field(info[2]);
    p.refid = Field(info[3]);
    p.groupid = Field(info[4]);
    p.flags = Field(info[5]);
    p.type = Field(info[6]);
    p.expiry = Field(info[7]);
    std::string_view payload = typed_bytes(info[8]);
    bool written = router_remote_message(st_->router, U32(info[0]), U32(info[1]), p, payload.data(), payload.size(),
                                         info[9].ToBoolean().Value(), Now(info[10]), st_->batch);
    Publish(info.Env(), written);
    return Napi::Boolean::New(info.Env(), written);
  }

  // remoteStatus(fromUid, toUid, id, status, now, receiptGid = -1, keep = false)
  Napi::Value RemoteStatus(const Napi::CallbackInfo &info) {
    Enter(info.Env());
    int64_t receipt = info[5].IsNumber() ? info[5].As<Napi::Number>().Int64Value() : -1;
    router_remote_status(st_->router, U32(info[0]), U32(info[1]), U32(info[2]), U32(info[3]), receipt, Now(info[4]),
                         st_->batch, info.Length() > 6 && info[6].ToBoolean().Value());
    Publish(info.Env(), 0);
    return info.Env().Undefined();
  }
  Napi::Value GroupSet(const Napi::CallbackInfo &info) {
    std::vector<UserId> ids;
    if (info[1].IsArray()) {
      Napi::Array a = info[1].As<Napi::Array>();
      for (uint32_t i = 0; i < a.Length(); ++i)
        ids.push_back(directory_intern(st_->router.dir, a.Get(i).ToString().Utf8Value()));
    }
    directory_group_set(st_->router.dir, U32(info[0]), std::move(ids));
    return info.Env().Undefined();
  }
  Napi::Value GroupForget(const Napi::CallbackInfo &info) {
    directory_group_forget(st_->router.dir, info[0].IsNumber() ? U32(info[0]) : 0);
    return info.Env().Undefined();
  }
  Napi::Value OutFormat(const Napi::CallbackInfo &info) {
    return Napi::Number::New(info.Env(), router_out_format(st_->router));
  }

  // submit(fromUid, conn, frame, admitted, now?) -> the core's verdict (0
  // pass, 1 consumed, 2 deferred), a negative wire error, or an admission
  // refusal (AdmitResult, admit.h): the frame through the rate limits (when
  // `admitted` is 0; otherwise it is what admit() said earlier), the core
  // (in the forms router_out_format names; head[OUT_FORMAT] says which)
  // and, for a verdict of 0 or 1, routed: one call per frame. The core's
  // info slots and out() are filled as its own submit fills them. The batch
  // is this frame's only when the verdict is 0 or 1.
  static napi_value FastSubmit(napi_env env, napi_callback_info cbinfo) {
    size_t argc = 5;
    napi_value argv[5];
    void *data = nullptr;
    napi_get_cb_info(env, cbinfo, &argc, argv, nullptr, &data);
    State &st = **static_cast<std::shared_ptr<State> *>(data);
    uint32_t from = kNone;
    int32_t conn = -1, admitted = 0;
    double now = 0;
    size_t len = 0;
    void *frame = nullptr;
    if (!st.core_ref || argc < 4 || napi_get_value_uint32(env, argv[0], &from) != napi_ok ||
        from >= st.router.dir.users.size() || napi_get_value_int32(env, argv[1], &conn) != napi_ok ||
        !frame_bytes(env, argv[2], frame, len) || napi_get_value_int32(env, argv[3], &admitted) != napi_ok) {
      error(Napi::Env(env), "E_BAD_ARGUMENT",
            "submit(from, conn, frame, admitted, now?) needs the core (new Delivery(..., core)), a known user id and a Uint8Array or ArrayBuffer")
          .ThrowAsJavaScriptException();
      return nullptr;
    }
    // Without `now`, the clock is read here: the caller then passes no
    // number that JavaScript would have to box.
    if (argc < 5 || napi_get_value_double(env, argv[4], &now) != napi_ok) now = wall_clock_ms();
    ConnId c = conn < 0 ? kNone : static_cast<ConnId>(conn);
    napi_value v;
    if (admitted == 0) {
      admitted = router_admit(st.router, c, static_cast<const uint8_t *>(frame), len, static_cast<uint64_t>(now));
      if (admitted < 0) {
        napi_create_int32(env, admitted, &v);
        return v;
      }
    }
    int of = router_out_format(st.router);
    st.head_p[HEAD_OUT_FORMAT] = of;
    const std::string &name = st.router.dir.users[from].name;
    SubmitResult res;
    // For this call only, the chain asks the engine whether the
    // destination is online (host_dest_online); the core may outlive the
    // engine, so it keeps no pointer to it.
    Core *core = core_of(st.core_ref);
    bool (*had)(void *, const char *, size_t) = nullptr;
    void *had_data = nullptr;
    if (core) {
      had = core->dest_online, had_data = core->dest_online_data;
      core->dest_online = host_dest_online, core->dest_online_data = &st;
    }
    int rc = core_submit_filled(st.core_ref, env, name.data(), name.size(), static_cast<const uint8_t *>(frame), len,
                                of, res);
    if (core) core->dest_online = had, core->dest_online_data = had_data;
    if (rc == kSubmitNoCore) return nullptr;
    // It passed as a status but is a message: it spends the message budget after all.
    if (rc == WIRE_OK && admitted == ADMIT_STATUS && res.op != WIRE_OP_STATUS)
      router_admit_charge(st.router, c, static_cast<uint64_t>(now));
    if (rc != WIRE_OK || res.verdict == VERDICT_DEFERRED) {
      napi_create_int32(env, rc != WIRE_OK ? rc : res.verdict, &v);
      return v;
    }
    st.env = env;
    int status = router_route(st.router, from, c, res, of, static_cast<uint64_t>(now), st.batch);
    Publish(Napi::Env(env), st, status);
    napi_create_int32(env, res.verdict, &v);
    return v;
  }

  // route(fromUid, conn, now, out, outFormat) -> status, after the core's
  // submit (or a deferred completion) filled its info slots and `out`.
  // route and submit are own properties of each handle, plain N-API
  // functions whose data is the State, as the core's submit is: the
  // per-message call skips node-addon-api's CallbackInfo and the unwrap.
  bool InstallFast(Napi::Env env, Napi::Object self, const char *name, napi_callback cb) {
    return define_fast_function(env, self, name, cb, st_);
  }

  static napi_value FastRoute(napi_env env, napi_callback_info cbinfo) {
    size_t argc = 5;
    napi_value argv[5];
    void *data = nullptr;
    napi_get_cb_info(env, cbinfo, &argc, argv, nullptr, &data);
    State &st = **static_cast<std::shared_ptr<State> *>(data);
    uint32_t from = kNone;
    int32_t conn = -1, out_format = OUT_SAME;
    double now = 0;
    char *o = nullptr;
    size_t out_len = 0;
    if (!st.info_p || argc < 5 || napi_get_value_uint32(env, argv[0], &from) != napi_ok ||
        napi_get_value_int32(env, argv[1], &conn) != napi_ok || napi_get_value_double(env, argv[2], &now) != napi_ok ||
        napi_get_buffer_info(env, argv[3], reinterpret_cast<void **>(&o), &out_len) != napi_ok ||
        napi_get_value_int32(env, argv[4], &out_format) != napi_ok) {
      error(Napi::Env(env), "E_BAD_ARGUMENT",
            "route(from, conn, now, out, outFormat) needs the core (new Delivery(..., core)) and its out() buffer")
          .ThrowAsJavaScriptException();
      return nullptr;
    }
    SubmitResult res;
    if (!unpack_result(st.info_p, o, out_len, st.to_scratch, res) || from >= st.router.dir.users.size()) {
      error(Napi::Env(env), "E_BAD_ARGUMENT", "route: an unknown sender, or not the out buffer the last submit filled")
          .ThrowAsJavaScriptException();
      return nullptr;
    }
    st.env = env;
    ConnId c = conn < 0 ? kNone : static_cast<ConnId>(conn);
    int status = router_route(st.router, from, c, res, out_format, static_cast<uint64_t>(now), st.batch);
    Publish(Napi::Env(env), st, status);
    napi_value v;
    napi_create_int32(env, status, &v);
    return v;
  }

  // moduleMessage(from, {to, id, refid, groupid, flags, type, expiry}, payload, now) -> 0 | -1
  Napi::Value ModuleMessage(const Napi::CallbackInfo &info) {
    Enter(info.Env());
    mesibo_message_params_t p{};
    params_from_js(info[1], p);
    std::string to = info[1].IsObject() ? info[1].As<Napi::Object>().Get("to").ToString().Utf8Value() : "";
    p.to = &to[0];
    std::string_view payload = typed_bytes(info[2]);
    int rc = router_module_message(st_->router, info[0].ToString().Utf8Value(), p, payload.data(), payload.size(),
                                   Now(info[3]), st_->batch);
    Publish(info.Env(), rc);
    return Napi::Number::New(info.Env(), rc);
  }

  // deliverCopy(recipientUid, fromUid, fields, payload, now) -> stored
  Napi::Value DeliverCopy(const Napi::CallbackInfo &info) {
    Enter(info.Env());
    mesibo_message_params_t p{};
    params_from_js(info[2], p);
    std::string_view payload = typed_bytes(info[3]);
    batch_clear(st_->batch);
    bool stored = router_deliver_copy(st_->router, U32(info[0]), U32(info[1]), p, payload.data(), payload.size(),
                                      Now(info[4]), st_->batch);
    Publish(info.Env(), stored);
    return Napi::Boolean::New(info.Env(), stored);
  }

  // queueAck(conn, frame, binary)
  Napi::Value QueueAck(const Napi::CallbackInfo &info) {
    std::string_view f = typed_bytes(info[1]);
    batch_clear(st_->batch);
    router_queue_ack(st_->router, Conn(info[0]), f.data(), f.size(), info[2].ToBoolean().Value(), st_->batch);
    Publish(info.Env(), 0);
    return info.Env().Undefined();
  }

  Napi::Value TrackReceipt(const Napi::CallbackInfo &info) {
    router_track_receipt(st_->router, U32(info[0]), U32(info[1]), U32(info[2]), U32(info[3]), U32(info[4]));
    return info.Env().Undefined();
  }
  Napi::Value InboxForget(const Napi::CallbackInfo &info) {
    router_inbox_forget(st_->router, Conn(info[0]));
    return info.Env().Undefined();
  }
  Napi::Value InboxRemoved(const Napi::CallbackInfo &info) {
    UserId u = Conn(info[0]);
    if (u != kNone) router_inbox_removed(st_->router, u);
    return info.Env().Undefined();
  }
  Napi::Value SetPerRecipient(const Napi::CallbackInfo &info) {
    st_->router.settings.per_recipient_stages = info[0].ToBoolean().Value();
    return info.Env().Undefined();
  }
  // configure({graceMs, maxInboxMessages, maxInboxBytes, rateLimit, userRateLimit}): the settings a
  // config reload changes while running; absent ones stay.
  Napi::Value Configure(const Napi::CallbackInfo &info) {
    if (!info[0].IsObject()) return info.Env().Undefined();
    Napi::Object o = info[0].As<Napi::Object>();
    RouterSettings &s = st_->router.settings;
    if (o.Get("graceMs").IsNumber()) s.grace_ms = static_cast<uint64_t>(o.Get("graceMs").As<Napi::Number>().DoubleValue());
    if (o.Get("maxInboxMessages").IsNumber())
      s.max_inbox_messages = static_cast<uint64_t>(o.Get("maxInboxMessages").As<Napi::Number>().DoubleValue());
    if (o.Get("maxInboxBytes").IsNumber()) s.max_inbox_bytes = o.Get("maxInboxBytes").As<Napi::Number>().DoubleValue();
    if (o.Get("rateLimit").IsNumber()) s.rate_limit = o.Get("rateLimit").As<Napi::Number>().DoubleValue();
    if (o.Get("userRateLimit").IsNumber()) s.user_rate_limit = o.Get("userRateLimit").As<Napi::Number>().DoubleValue();
    return info.Env().Undefined();
  }
  // admit(conn, frame, now) -> AdmitResult: the rate limits alone, for a
  // frame that meets middleware before it is submitted (submit's
  // `admitted` then carries the answer).
  Napi::Value Admit(const Napi::CallbackInfo &info) {
    void *frame = nullptr;
    size_t len = 0;
    if (!frame_bytes(info.Env(), info[1], frame, len)) {
      error(info.Env(), "E_BAD_ARGUMENT", "admit(conn, frame, now) takes a Uint8Array or an ArrayBuffer").ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    int a = router_admit(st_->router, Conn(info[0]), static_cast<const uint8_t *>(frame), len, Now(info[2]));
    return Napi::Number::New(info.Env(), a);
  }
  Napi::Value CommitFailed(const Napi::CallbackInfo &info) {
    router_commit_failed(st_->router, st_->batch);
    Publish(info.Env(), 0);
    return info.Env().Undefined();
  }
  Napi::Value CommitBegin(const Napi::CallbackInfo &info) {
    return Napi::Number::New(info.Env(), double(router_commit_begin(st_->router)));
  }
  Napi::Value Committed(const Napi::CallbackInfo &info) {
    router_committed(st_->router, static_cast<uint64_t>(info[0].ToNumber().DoubleValue()), st_->batch);
    Publish(info.Env(), 0);
    return info.Env().Undefined();
  }
  Napi::Value Expire(const Napi::CallbackInfo &info) {
    Enter(info.Env());
    router_expire(st_->router, Now(info[0]), st_->batch);
    Publish(info.Env(), 0);
    return info.Env().Undefined();
  }
  Napi::Value Stop(const Napi::CallbackInfo &info) {
    Enter(info.Env());
    router_stop(st_->router, st_->batch);
    Publish(info.Env(), 0);
    return info.Env().Undefined();
  }
  // counters() -> Float64Array: delivered, copiesStored, receivedPass,
  // receivedFailed, receivedConsumed, inboxFull, then statuses[0..255].
  Napi::Value Counters(const Napi::CallbackInfo &) {
    const sb::Counters &c = st_->router.counters;
    Napi::Float64Array a = st_->counters.Value();
    double *d = a.Data();
    d[0] = double(c.delivered);
    d[1] = double(c.copies_stored);
    d[2] = double(c.received_pass);
    d[3] = double(c.received_failed);
    d[4] = double(c.received_consumed);
    d[5] = double(c.inbox_full);
    for (size_t i = 0; i < 256; ++i) d[COUNTER_FIXED + i] = double(c.statuses[i]);
    return a;
  }
  Napi::Value LiveCount(const Napi::CallbackInfo &info) {
    return Napi::Number::New(info.Env(), double(router_live_count(st_->router)));
  }

  std::shared_ptr<State> st_;
};

}  // namespace

void delivery_binding_init(Napi::Env env, Napi::Object exports) {
  exports.Set("Delivery", DeliveryHandle::Define(env));
  // The layout of the views, so lib/delivery.ts takes it from here rather
  // than mirroring it.
  Napi::Object layout = Napi::Object::New(env);
  const char *head[] = {"status", "writes", "ops", "bytes", "commit", "liveWait", "perRecipient", "recipients", "talked", "grown", "outFormat"};
  Napi::Object h = Napi::Object::New(env);
  for (uint32_t i = 0; i < HEAD_COUNT; ++i) h.Set(head[i], i);
  layout.Set("head", h);
  const char *op[] = {"kind", "recipient", "sender", "id", "refid", "gid", "flags", "type", "expiry", "expiresAt", "payloadOff", "payloadLen", "afterCommit", "status", "receipt", "keep"};
  Napi::Object of = Napi::Object::New(env);
  for (uint32_t i = 0; i < OP_FIELDS; ++i) of.Set(op[i], i);
  layout.Set("op", of);
  layout.Set("opFields", double(OP_FIELDS));
  layout.Set("writeFields", double(WRITE_FIELDS));
  Napi::Object kinds = Napi::Object::New(env);
  kinds.Set("enqueue", double(STORE_ENQUEUE));
  kinds.Set("ack", double(STORE_ACK));
  kinds.Set("forward", double(STORE_FORWARD));
  kinds.Set("forwardStatus", double(STORE_FORWARD_STATUS));
  layout.Set("opKinds", kinds);
  Napi::Object admit = Napi::Object::New(env);
  admit.Set("message", double(ADMIT_MESSAGE));
  admit.Set("status", double(ADMIT_STATUS));
  admit.Set("refusedStatus", double(ADMIT_REFUSED_STATUS));
  admit.Set("refusedConnection", double(ADMIT_REFUSED_CONNECTION));
  admit.Set("refusedUser", double(ADMIT_REFUSED_USER));
  layout.Set("admit", admit);
  exports.Set("deliveryLayout", layout);
}

}  // namespace sb
