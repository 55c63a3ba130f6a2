// N-API binding of the core. No logic lives here: each function converts
// arguments, calls the core (core.h; scripts.h for script modules,
// instances.h for what instances report, slots.h for the shared arrays) and
// converts the result back.
#include <dlfcn.h>

#include <napi.h>

#include <algorithm>
#include <string_view>
#include <memory>

#include "config.h"
#include "core.h"
#include "delivery_binding.h"
#include "instances.h"
#include "napi_args.h"
#include "io.h"
#include "json_extract.h"
#include "module.h"
#include "scripts.h"
#include "slots.h"
#include "sqlite_binding.h"
#include "wire.h"

namespace {

Napi::Error make_error(Napi::Env env, const std::string &code, const std::string &message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

std::string as_string(const Napi::Value &v) { return v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string(); }

// A payload argument: a typed array's bytes (no copy), or a string's UTF-8
// kept in `scratch`.
std::string_view payload_arg(const Napi::Value &v, std::string &scratch) {
  if (v.IsTypedArray()) return sb::typed_bytes(v);
  scratch = as_string(v);
  return scratch;
}

// [type, flags, expiry, refid]: the params a script module may change.
sb::ScriptFields script_fields(const Napi::Value &v) {
  Napi::Array f = v.As<Napi::Array>();
  auto at = [&f](uint32_t i) { return static_cast<uint64_t>(f.Get(i).ToNumber().Int64Value()); };
  sb::ScriptFields out;
  out.type = at(0);
  out.flags = at(1);
  out.expiry = at(2);
  out.refid = at(3);
  return out;
}

Napi::Object config_to_js(Napi::Env env, const sb::Config &c) {
  auto items_to_js = [&](const std::vector<sb::ConfigItem> &items) {
    Napi::Array a = Napi::Array::New(env, items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("key", items[i].key);
      o.Set("value", items[i].value);
      o.Set("line", static_cast<double>(items[i].line));
      a.Set(static_cast<uint32_t>(i), o);
    }
    return a;
  };
  Napi::Object out = Napi::Object::New(env);
  out.Set("file", c.file);
  out.Set("dir", c.dir);
  out.Set("settings", items_to_js(c.settings));
  Napi::Array mods = Napi::Array::New(env, c.modules.size());
  for (size_t i = 0; i < c.modules.size(); ++i) {
    Napi::Object m = Napi::Object::New(env);
    m.Set("name", c.modules[i].name);
    m.Set("line", static_cast<double>(c.modules[i].line));
    m.Set("items", items_to_js(c.modules[i].items));
    mods.Set(static_cast<uint32_t>(i), m);
  }
  out.Set("modules", mods);
  return out;
}

Napi::Error config_error_to_js(Napi::Env env, const sb::ConfigError &err) {
  Napi::Error e = make_error(env, err.code, err.to_string());
  e.Set("file", err.file);
  e.Set("line", static_cast<double>(err.line));
  return e;
}

// {file} or {text, file, dir}: the config as the user gave it.
bool read_config(const Napi::Object &src, sb::Config &cfg, sb::ConfigError &err) {
  std::string file = as_string(src.Get("file"));
  if (src.Get("text").IsString()) {
    std::string dir = as_string(src.Get("dir"));
    return sb::config_parse(as_string(src.Get("text")), file.empty() ? "<inline>" : file, dir.empty() ? "." : dir, cfg,
                            err);
  }
  return sb::config_load(file, cfg, err);
}

Napi::Value ParseConfig(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) {
    make_error(env, "E_BAD_ARGUMENT", "parseConfig expects {file} or {text, file, dir}").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  sb::Config cfg;
  sb::ConfigError err;
  if (!read_config(info[0].As<Napi::Object>(), cfg, err)) {
    config_error_to_js(env, err).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return config_to_js(env, cfg);
}

class CoreHandle;

// State shared by the JS handle and the wake-up callback; the callback may
// run after the handle is closed, so it holds its own reference.
struct State {
  sb::Core core;
  Napi::ThreadSafeFunction tsfn;
  Napi::FunctionReference on_events;
  bool tsfn_live = false;
  CoreHandle *owner = nullptr;  // cleared when the handle shuts down
  uint64_t js_calls = 0;        // calls from the addon into JavaScript
  uv_timer_t *timer = nullptr;  // checks deferred decisions' deadlines
};

void drain_and_emit(Napi::Env env, State &st);

Napi::Object delivery_to_js(Napi::Env env, const sb::Outgoing &o) {
  Napi::Object m = Napi::Object::New(env);
  m.Set("module", o.module);
  m.Set("from", o.from);
  m.Set("to", o.to);
  m.Set("id", static_cast<double>(o.params.id));
  m.Set("refid", static_cast<double>(o.params.refid));
  m.Set("groupid", static_cast<double>(o.params.groupid));
  m.Set("flags", static_cast<double>(o.params.flags));
  m.Set("type", static_cast<double>(o.params.type));
  m.Set("expiry", static_cast<double>(o.params.expiry));
  m.Set("payload", Napi::Buffer<char>::Copy(env, o.payload.data(), o.payload.size()));
  return m;
}

void emit_completions(Napi::Env env, State &st, std::vector<sb::Completion> &done);

void drain_and_emit(Napi::Env env, State &st) {
  std::vector<sb::Outgoing> deliveries;
  std::vector<sb::LogLine> logs;
  std::vector<sb::Completion> done;
  sb::core_drain(st.core, deliveries, logs, &done);
  if ((deliveries.empty() && logs.empty() && done.empty()) || st.on_events.IsEmpty()) return;
  Napi::HandleScope scope(env);
  if (deliveries.empty() && logs.empty()) {
    emit_completions(env, st, done);
    return;
  }
  Napi::Array d = Napi::Array::New(env, deliveries.size());
  for (size_t i = 0; i < deliveries.size(); ++i) d.Set(static_cast<uint32_t>(i), delivery_to_js(env, deliveries[i]));
  Napi::Array l = Napi::Array::New(env, logs.size());
  for (size_t i = 0; i < logs.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("module", logs[i].module);
    o.Set("level", static_cast<double>(logs[i].level));
    o.Set("text", logs[i].text);
    if (!logs[i].event.empty()) {
      o.Set("event", logs[i].event);
      o.Set("subject", logs[i].subject);
    }
    l.Set(static_cast<uint32_t>(i), o);
  }
  ++st.js_calls;
  st.on_events.Call({d, l});
  emit_completions(env, st, done);
}

// Runs the core's deadline check as often as it asks (Host::expire_every).
// The timer is unreferenced: waiting messages alone do not keep Node running.
void expire_every(State &st, uint32_t ms) {
  if (!st.timer) return;
  if (ms) uv_timer_start(st.timer, [](uv_timer_t *t) {
      auto *s = static_cast<std::shared_ptr<State> *>(t->data);
      sb::core_expire((*s)->core, sb::now_ns());  // wakes the drain when something timed out
    }, ms, ms);
  else uv_timer_stop(st.timer);
}


// Marks CoreHandle objects, so that core_ref_of never takes another
// wrapped object for one.
const napi_type_tag kCoreHandleTag = {0x5b3c2a1e9d7f4c60ull, 0x8e2f1a7c3b5d9e04ull};

class CoreHandle : public Napi::ObjectWrap<CoreHandle> {
 public:
  // The core, for the delivery engine (core_of); nullptr once closed.
  sb::Core *core() { return state_ && !sb::core_closed(state_->core) ? &state_->core : nullptr; }

  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "CoreHandle",
                       {InstanceMethod<&CoreHandle::Out>("out"),
                        InstanceMethod<&CoreHandle::Info>("info"),
                        InstanceMethod<&CoreHandle::Instances>("instances"),
                        InstanceMethod<&CoreHandle::Login>("login"),
                        InstanceMethod<&CoreHandle::Status>("status"),
                        InstanceMethod<&CoreHandle::Call>("call"),
                        InstanceMethod<&CoreHandle::CallStatus>("callStatus"),
                        InstanceMethod<&CoreHandle::Drain>("drain"),
                        InstanceMethod<&CoreHandle::Close>("close"),
                        InstanceMethod<&CoreHandle::Scripts>("scripts"),
                        InstanceMethod<&CoreHandle::AttachScript>("attachScript"),
                        InstanceMethod<&CoreHandle::AddScript>("addScript"),
                        InstanceMethod<&CoreHandle::ScriptHooks>("scriptHooks"),
                        InstanceMethod<&CoreHandle::Defer>("defer"),
                        InstanceMethod<&CoreHandle::Resolve>("resolve"),
                        InstanceMethod<&CoreHandle::HookSet>("hookSet"),
                        InstanceMethod<&CoreHandle::Send>("send"),
                        InstanceMethod<&CoreHandle::Log>("log"),
                        InstanceMethod<&CoreHandle::CountError>("countError"),
                        InstanceMethod<&CoreHandle::Counters>("counters"),
                        InstanceMethod<&CoreHandle::ReloadPlan>("reloadPlan"),
                        InstanceMethod<&CoreHandle::ReloadInstance>("reloadInstance"),
                        InstanceMethod<&CoreHandle::CommitReload>("commitReload"),
                        InstanceMethod<&CoreHandle::AbortReload>("abortReload"),
                        InstanceMethod<&CoreHandle::RemoveScript>("removeScript"),
                        InstanceMethod<&CoreHandle::SetLogLevel>("setLogLevel"),
                        InstanceMethod<&CoreHandle::ScriptLogLevel>("scriptLogLevel")});
  }

  // Fills the info slots and the out buffer from a result, as submit does;
  // a result larger than the buffer gets a new one (INFO_OUT_GROWN).
  void Fill(Napi::Env env, const sb::SubmitResult &res) {
    size_t to_len = sb::result_to_len(res);
    size_t need = sb::result_size(res, to_len);
    info_ptr_[sb::INFO_OUT_GROWN] = 0;
    if (need > out_cap_) {
      GrowOut(env, need * 2);
      info_ptr_[sb::INFO_OUT_GROWN] = 1;
    }
    sb::pack_result(res, to_len, info_ptr_, out_ptr_);
  }

  // A client message finished after a deferral: the info slots and out
  // buffer describe it while the JS completion handler runs.
  void EmitCompletion(Napi::Env env, sb::Completion &c) {
    if (on_complete_.IsEmpty()) return;
    sb::SubmitResult r = sb::completion_result(c);
    Fill(env, r);
    ++state_->js_calls;
    on_complete_.Call({Napi::Number::New(env, static_cast<double>(c.token)), Napi::Number::New(env, c.verdict),
                       Napi::String::New(env, c.from)});
  }

  // A script module's hook (Host::script_call): the core packed its
  // arguments into the hook slots and buffer; one call into JavaScript.
  sb::ScriptCall CallHook(sb::Hook hook, uint32_t script_id, int32_t *ret) {
    if (on_hook_.IsEmpty()) return sb::SCRIPT_CALL_NO_VERDICT;
    napi_env env = env_;
    napi_value fn = on_hook_.Value(), argv[2], recv, result;
    napi_create_int32(env, hook, &argv[0]);
    napi_create_uint32(env, script_id, &argv[1]);
    napi_get_undefined(env, &recv);
    ++state_->js_calls;
    if (napi_call_function(env, recv, fn, 2, argv, &result) != napi_ok) {
      // The TypeScript side catches what a module throws; this is a failure
      // of that glue itself. The server stays up; the core says so.
      napi_value exc;
      napi_get_and_clear_last_exception(env, &exc);
      return sb::SCRIPT_CALL_FAILED;
    }
    return napi_get_value_int32(env, result, ret) == napi_ok ? sb::SCRIPT_CALL_VERDICT : sb::SCRIPT_CALL_NO_VERDICT;
  }

  // new CoreHandle(configSource, onEvents)
  CoreHandle(const Napi::CallbackInfo &info) : Napi::ObjectWrap<CoreHandle>(info) {
    Napi::Env env = info.Env();
    napi_type_tag_object(env, info.This(), &kCoreHandleTag);
    if (!info[0].IsObject() || !info[1].IsFunction()) {
      make_error(env, "E_BAD_ARGUMENT", "CoreHandle expects (configSource, onEvents)").ThrowAsJavaScriptException();
      return;
    }
    sb::Config cfg;
    sb::ConfigError cerr;
    if (!read_config(info[0].As<Napi::Object>(), cfg, cerr)) {
      config_error_to_js(env, cerr).ThrowAsJavaScriptException();
      return;
    }
    state_ = std::make_shared<State>();
    state_->owner = this;
    env_ = env;
    if (!InstallSubmit(env, info.This().As<Napi::Object>())) {
      make_error(env, "E_INTERNAL", "could not create the core's submit function").ThrowAsJavaScriptException();
      return;
    }
    state_->on_events = Napi::Persistent(info[1].As<Napi::Function>());
    std::shared_ptr<State> st = state_;
    state_->tsfn = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "switchboard-drain", 0, 1);
    state_->tsfn.Unref(env);
    state_->tsfn_live = true;
    auto *holder = new std::shared_ptr<State>(st);
    sb::Host host;
    host.data = holder;
    host.wake = [](void *data) {
      std::shared_ptr<State> s = *static_cast<std::shared_ptr<State> *>(data);
      s->tsfn.NonBlockingCall([s](Napi::Env env, Napi::Function) { drain_and_emit(env, *s); });
    };
    host.script_call = [](void *data, sb::Hook hook, uint32_t script_id, int32_t *ret) {
      State &s = **static_cast<std::shared_ptr<State> *>(data);
      return s.owner ? s.owner->CallHook(hook, script_id, ret) : sb::SCRIPT_CALL_NO_VERDICT;
    };
    host.expire_every = [](void *data, uint32_t ms) { expire_every(**static_cast<std::shared_ptr<State> *>(data), ms); };
    wake_holder_ = holder;
    uv_loop_t *loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) == napi_ok && loop) {
      state_->timer = new uv_timer_t;
      uv_timer_init(loop, state_->timer);
      state_->timer->data = new std::shared_ptr<State>(st);
      uv_unref(reinterpret_cast<uv_handle_t *>(state_->timer));
    }

    sb::OpenError oerr;
    bool ok = sb::core_open(state_->core, cfg, host, oerr);
    // Lines logged during load (warnings, a failing init's output) reach the
    // caller's log before open returns or throws.
    drain_and_emit(env, *state_);
    if (!ok) {
      Napi::Error e = make_error(env, oerr.code, oerr.message);
      if (!oerr.module.empty()) e.Set("module", oerr.module);
      if (!oerr.file.empty()) e.Set("file", oerr.file);
      if (oerr.line) e.Set("line", static_cast<double>(oerr.line));
      Napi::Array lines = Napi::Array::New(env, oerr.module_log.size());
      for (size_t i = 0; i < oerr.module_log.size(); ++i) lines.Set(static_cast<uint32_t>(i), oerr.module_log[i]);
      e.Set("moduleLog", lines);
      Shutdown();
      e.ThrowAsJavaScriptException();
      return;
    }
    GrowOut(env, sb::result_buffer_size(state_->core));
    info_ = Napi::Persistent(Napi::Float64Array::New(env, sb::INFO_COUNT));
    info_ptr_ = info_.Value().Data();
    hook_ = Napi::Persistent(Napi::Float64Array::New(env, sb::HK_COUNT));
    Napi::Buffer<char> hb = Napi::Buffer<char>::New(env, sb::hook_buffer_size(state_->core));
    hook_buf_ = Napi::Persistent(hb);
    sb::script_bridge_attach(state_->core, hook_.Value().Data(), hb.Data(), hb.Length());
  }

  ~CoreHandle() override { Shutdown(); }

 private:
  void GrowOut(Napi::Env env, size_t cap) {
    Napi::Buffer<char> b = Napi::Buffer<char>::New(env, cap);
    out_ = Napi::Persistent(b);
    out_ptr_ = b.Data();
    out_cap_ = cap;
  }

  bool Open(Napi::Env env) {
    if (state_ && !sb::core_closed(state_->core)) return true;
    make_error(env, "E_CORE_CLOSED", "this core is closed; open a new one").ThrowAsJavaScriptException();
    return false;
  }

  // submit(from: string, frame: Uint8Array, outFormat: 0|1|-1) -> verdict >= 0, or a negative wire error.
  // The per-message call: raw N-API with no handle it does not need (the
  // node-addon-api wrappers cost several extra calls per argument).
  napi_value SubmitArgs(napi_env env, size_t argc, const napi_value *argv) {
    Napi::Env e(env);
    if (!Open(e)) return nullptr;
    if (argc < 2) return BadSubmit(e);
    char from[512];
    size_t from_len = 0;
    if (napi_get_value_string_utf8(env, argv[0], from, sizeof from, &from_len) != napi_ok) return BadSubmit(e);
    if (from_len == 0 || from_len >= sizeof from - 1) {
      make_error(e, "E_BAD_ADDRESS", "the sender address must be 1 to 510 bytes").ThrowAsJavaScriptException();
      return nullptr;
    }
    napi_typedarray_type type;
    size_t length = 0;
    void *data = nullptr;
    if (napi_get_typedarray_info(env, argv[1], &type, &length, &data, nullptr, nullptr) != napi_ok ||
        (type != napi_uint8_array && type != napi_int8_array && type != napi_uint8_clamped_array))
      return BadSubmit(e);
    int32_t fmt = -1;
    if (argc > 2) napi_get_value_int32(env, argv[2], &fmt);

    sb::SubmitResult res;
    int rc = SubmitFrame(e, from, from_len, static_cast<const uint8_t *>(data), length, fmt, res);
    napi_value v;
    napi_create_int32(env, rc != sb::WIRE_OK ? rc : static_cast<int32_t>(res.verdict), &v);  // a small integer: no allocation
    return v;
  }

 public:
  // core_submit, then what JavaScript reads of it filled in (info slots and
  // out(), or the refused frame's id and detail). For submit() and for the
  // delivery engine's submit (core_submit_filled). An open core only.
  int SubmitFrame(Napi::Env e, const char *from, size_t from_len, const uint8_t *data, size_t length, int fmt,
                  sb::SubmitResult &res, bool status_frame = true) {
    int rc = sb::core_submit(state_->core, from, from_len, data, length, fmt, res, status_frame);
    if (rc != sb::WIRE_OK) {
      info_ptr_[sb::INFO_ID] = static_cast<double>(sb::core_refused_id(state_->core));
      return rc;
    }
    Fill(e, res);
    return rc;
  }

 private:

  // submit(from, frame, outFormat) is an own property of each handle, not a
  // prototype method: a plain N-API function whose data is the State, so the
  // per-message call skips node-addon-api's CallbackInfo and napi_unwrap (a
  // private-symbol lookup). The State outlives the handle when the function
  // does; a call after the handle went away finds owner cleared and reports
  // E_CORE_CLOSED.
  bool InstallSubmit(Napi::Env env, Napi::Object self) {
    return sb::define_fast_function(env, self, "submit", FastSubmit, state_);
  }

  static napi_value FastSubmit(napi_env env, napi_callback_info cbinfo) {
    size_t argc = 3;
    napi_value argv[3];
    void *data = nullptr;
    napi_get_cb_info(env, cbinfo, &argc, argv, nullptr, &data);
    State &st = **static_cast<std::shared_ptr<State> *>(data);
    if (!st.owner) {
      make_error(Napi::Env(env), "E_CORE_CLOSED", "this core is closed; open a new one").ThrowAsJavaScriptException();
      return nullptr;
    }
    return st.owner->SubmitArgs(env, argc, argv);
  }

  napi_value BadSubmit(Napi::Env env) {
    make_error(env, "E_BAD_ARGUMENT", "submit expects (from: string, frame: Uint8Array, outFormat?: 0 | 1 | -1)")
        .ThrowAsJavaScriptException();
    return nullptr;
  }

  Napi::Value Out(const Napi::CallbackInfo &info) {
    if (out_.IsEmpty()) return info.Env().Undefined();
    return out_.Value();
  }

  // info() -> the shared Float64Array; info(true) -> why the last submit
  // refused its frame, as a string.
  Napi::Value Info(const Napi::CallbackInfo &info) {
    if (info[0].IsBoolean() && info[0].As<Napi::Boolean>().Value())
      return Napi::String::New(info.Env(), state_ ? sb::core_refused_detail(state_->core) : std::string());
    if (info_.IsEmpty()) return info.Env().Undefined();
    return info_.Value();
  }

  Napi::Value Instances(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    std::vector<sb::InstanceSnapshot> chain;
    sb::core_instances(state_->core, chain);
    Napi::Array a = Napi::Array::New(env, chain.size());
    for (size_t i = 0; i < chain.size(); ++i) {
      const sb::InstanceSnapshot &inst = chain[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", inst.name);
      o.Set("file", inst.file);
      o.Set("position", static_cast<double>(inst.position));
      o.Set("description", inst.description ? Napi::Value(Napi::String::New(env, *inst.description)) : env.Null());
      o.Set("logLevel", static_cast<double>(inst.log_level));
      o.Set("script", Napi::Boolean::New(env, inst.script));
      if (inst.script) o.Set("scriptId", static_cast<double>(inst.script_id));
      o.Set("errors", static_cast<double>(inst.errors));
      o.Set("timeouts", static_cast<double>(inst.timeouts));
      Napi::Object budget = Napi::Object::New(env);
      budget.Set("budgetNs", static_cast<double>(inst.budget_ns));
      budget.Set("overBudget", static_cast<double>(inst.over_budget));
      budget.Set("bypassed", static_cast<double>(inst.bypassed_msgs));
      budget.Set("trips", static_cast<double>(inst.budget_trips));
      budget.Set("active", Napi::Boolean::New(env, inst.bypassed));
      o.Set("budget", budget);
      Napi::Object verdicts = Napi::Object::New(env);
      verdicts.Set("pass", static_cast<double>(inst.verdicts[sb::VERDICT_PASS]));
      verdicts.Set("consumed", static_cast<double>(inst.verdicts[sb::VERDICT_CONSUMED]));
      verdicts.Set("deferred", static_cast<double>(inst.verdicts[sb::VERDICT_DEFER]));
      o.Set("verdicts", verdicts);
      Napi::Array hooks = Napi::Array::New(env);
      Napi::Object stats = Napi::Object::New(env);
      for (int h = 0; h < sb::HOOK_COUNT; ++h) {
        if (!(inst.hooks & (1u << h))) continue;
        const char *name = sb::hook_name(static_cast<sb::Hook>(h));
        const sb::HookTimes &t = inst.times[h];
        hooks.Set(hooks.Length(), name);
        Napi::Object s = Napi::Object::New(env);
        s.Set("calls", static_cast<double>(t.calls));
        s.Set("totalNs", t.total_ns);
        s.Set("maxNs", t.max_ns);
        Napi::Array buckets = Napi::Array::New(env, sb::kHookBuckets + 1);
        for (uint32_t b = 0; b <= sb::kHookBuckets; ++b) buckets.Set(b, static_cast<double>(t.buckets[b]));
        s.Set("buckets", buckets);
        stats.Set(name, s);
      }
      o.Set("hooks", hooks);
      o.Set("stats", stats);
      a.Set(static_cast<uint32_t>(i), o);
    }
    return a;
  }

  // login(address, online, flags)
  Napi::Value Login(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    std::string address = as_string(info[0]);
    mesibo_user_t u{};
    u.address = &address[0];
    u.online = info[1].ToBoolean() ? 1 : 0;
    u.flags = info[2].IsNumber() ? static_cast<mesibo_uint_t>(info[2].As<Napi::Number>().Int64Value()) : 0;
    sb::core_dispatch_login(state_->core, &u);
    return env.Undefined();
  }

  // status({id, status, from, to, groupid, ...}, format?) -> runs
  // on_message_status; with a format (0 JSON, 1 binary) also returns the
  // status frame for `to`.
  Napi::Value Status(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    if (!info[0].IsObject()) {
      make_error(env, "E_BAD_ARGUMENT", "status expects {id, status, from, to}").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Object o = info[0].As<Napi::Object>();
    std::string from = as_string(o.Get("from")), to = as_string(o.Get("to"));
    mesibo_message_params_t p{};
    sb::params_from_js(o, p);
    p.from = &from[0];
    p.to = &to[0];
    if (!info[1].IsNumber()) {
      sb::core_dispatch_status(state_->core, &p);
      return env.Undefined();
    }
    size_t n = sb::core_status(state_->core, &p, info[1].As<Napi::Number>().Int32Value());
    return Napi::Buffer<char>::Copy(env, sb::core_status_frame(state_->core), n);
  }

  Napi::Value Call(const Napi::CallbackInfo &info) {
    if (Open(info.Env())) sb::core_dispatch_call(state_->core);
    return info.Env().Undefined();
  }

  Napi::Value CallStatus(const Napi::CallbackInfo &info) {
    if (Open(info.Env())) sb::core_dispatch_call_status(state_->core);
    return info.Env().Undefined();
  }

  // Runs what is queued now instead of waiting for the wake-up.
  Napi::Value Drain(const Napi::CallbackInfo &info) {
    // Not from inside a module's hook: the chain there is mid-way, and the
    // wake-up that follows drains anyway.
    if (state_ && !sb::core_in_hook(state_->core)) drain_and_emit(info.Env(), *state_);
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo &info) {
    if (state_ && !sb::core_closed(state_->core)) {
      sb::core_close(state_->core);
      drain_and_emit(info.Env(), *state_);  // on_cleanup's log lines
    }
    Shutdown();
    return info.Env().Undefined();
  }

  // A script's id argument; false (and nothing to do) for a non-number or
  // a handle whose core never opened.
  bool ScriptId(const Napi::Value &v, uint32_t &id) {
    if (!state_ || !v.IsNumber()) return false;
    id = v.As<Napi::Number>().Uint32Value();
    return true;
  }

  // The core refused `what` because a module's hook is running (SCRIPT_BUSY):
  // the chain changes only between messages.
  void ThrowBusy(Napi::Env env, const char *what) {
    make_error(env, "E_CORE_BUSY", std::string(what) + " cannot run inside a module's hook; do it after the hook returns")
        .ThrowAsJavaScriptException();
  }

  void ThrowOpenError(Napi::Env env, const sb::OpenError &oerr) {
    Napi::Error e = make_error(env, oerr.code, oerr.message);
    if (!oerr.module.empty()) e.Set("module", oerr.module);
    if (!oerr.file.empty()) e.Set("file", oerr.file);
    if (oerr.line) e.Set("line", static_cast<double>(oerr.line));
    Napi::Array lines = Napi::Array::New(env, oerr.module_log.size());
    for (size_t i = 0; i < oerr.module_log.size(); ++i) lines.Set(static_cast<uint32_t>(i), oerr.module_log[i]);
    e.Set("moduleLog", lines);
    e.ThrowAsJavaScriptException();
  }

  // reloadPlan(configSource) -> {dir, steps: [{name, index, position, action, script, file, sameFile, sameItems, items}], removed}
  Napi::Value ReloadPlan(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    sb::Config cfg;
    sb::ConfigError cerr;
    if (!info[0].IsObject() || !read_config(info[0].As<Napi::Object>(), cfg, cerr)) {
      if (cerr.code.empty()) cerr.code = "E_BAD_ARGUMENT", cerr.message = "reloadPlan expects {file} or {text, file, dir}";
      config_error_to_js(env, cerr).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    std::vector<sb::ReloadStep> steps;
    std::vector<std::string> removed;
    sb::OpenError oerr;
    if (!sb::core_reload_plan(state_->core, cfg, steps, removed, oerr)) {
      ThrowOpenError(env, oerr);
      return env.Undefined();
    }
    static const char *const kAction[] = {"unchanged", "changed", "restart"};
    Napi::Array a = Napi::Array::New(env, steps.size());
    for (size_t i = 0; i < steps.size(); ++i) {
      const sb::ReloadStep &st = steps[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", st.name);
      o.Set("index", static_cast<double>(st.index));
      o.Set("position", st.inst ? Napi::Value(Napi::Number::New(env, static_cast<double>(st.position))) : env.Null());
      if (st.inst && st.script) o.Set("scriptId", static_cast<double>(st.script_id));
      o.Set("action", kAction[st.action]);
      o.Set("script", Napi::Boolean::New(env, st.script));
      o.Set("file", st.file);
      o.Set("sameFile", Napi::Boolean::New(env, st.same_file));
      o.Set("sameItems", Napi::Boolean::New(env, st.same_items));
      Napi::Object items = Napi::Object::New(env);
      for (const auto &it : cfg.modules[st.index].items) items.Set(it.key, it.value);
      o.Set("items", items);
      a.Set(static_cast<uint32_t>(i), o);
    }
    Napi::Array r = Napi::Array::New(env, removed.size());
    for (size_t i = 0; i < removed.size(); ++i) r.Set(static_cast<uint32_t>(i), removed[i]);
    Napi::Object out = Napi::Object::New(env);
    out.Set("dir", cfg.dir);
    out.Set("steps", a);
    out.Set("removed", r);
    return out;
  }

  // reloadInstance(configSource, index, scriptId?): replaces the running
  // instance declared at config index `index` by one made from that block.
  // Native: loaded, initialised and swapped in at once; returns its
  // position. Script: prepared under scriptId for the host's init; returns
  // {logLevel}, and commitReload/abortReload(scriptId) follows. Throws the
  // load error (code, message, moduleLog); the old instance stays.
  Napi::Value ReloadInstance(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    sb::Config cfg;
    sb::ConfigError cerr;
    if (!info[0].IsObject() || !info[1].IsNumber() || !read_config(info[0].As<Napi::Object>(), cfg, cerr)) {
      make_error(env, cerr.code.empty() ? "E_BAD_ARGUMENT" : cerr.code,
                 cerr.code.empty() ? "reloadInstance expects (configSource, index)" : cerr.to_string())
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    sb::ReloadedBlock done;
    sb::OpenError oerr;
    switch (sb::core_reload_block(state_->core, cfg, info[1].As<Napi::Number>().Uint32Value(),
                                  info[2].IsNumber() ? info[2].As<Napi::Number>().Uint32Value() : 0, done, oerr)) {
      case sb::RELOAD_BLOCK_BUSY:
        ThrowBusy(env, "a module reload");
        return env.Undefined();
      case sb::RELOAD_BLOCK_MISMATCH:
        make_error(env, "E_BAD_ARGUMENT", "reloadInstance: the block at that index does not match the running chain")
            .ThrowAsJavaScriptException();
        return env.Undefined();
      case sb::RELOAD_BLOCK_FAILED:
        drain_and_emit(env, *state_);  // what the failed init logged comes before the error
        ThrowOpenError(env, oerr);
        return env.Undefined();
      case sb::RELOAD_BLOCK_STAGED: {
        Napi::Object o = Napi::Object::New(env);
        o.Set("logLevel", static_cast<double>(done.log_level));
        return o;
      }
      case sb::RELOAD_BLOCK_SWAPPED:
        break;
    }
    drain_and_emit(env, *state_);  // init's and the old instance's on_cleanup lines
    return Napi::Number::New(env, static_cast<double>(done.position));
  }

  // commitReload(scriptId) -> true when the staged script took its predecessor's place.
  Napi::Value CommitReload(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    uint32_t id = 0;
    if (!ScriptId(info[0], id)) return Napi::Boolean::New(env, false);
    sb::ScriptStatus rc = sb::script_commit_reload(state_->core, id);
    if (rc == sb::SCRIPT_BUSY) ThrowBusy(env, "a module reload");
    return Napi::Boolean::New(env, rc == sb::SCRIPT_OK);
  }

  Napi::Value AbortReload(const Napi::CallbackInfo &info) {
    uint32_t id = 0;
    if (ScriptId(info[0], id)) sb::script_abort_reload(state_->core, id);
    return info.Env().Undefined();
  }

  // removeScript(scriptId) -> true when it was in the chain and is no more.
  Napi::Value RemoveScript(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    uint32_t id = 0;
    if (!ScriptId(info[0], id)) return Napi::Boolean::New(env, false);
    sb::ScriptStatus rc = sb::script_remove(state_->core, id);
    if (rc == sb::SCRIPT_BUSY) {
      ThrowBusy(env, "removing a module");
      return env.Undefined();
    }
    return Napi::Boolean::New(env, rc == sb::SCRIPT_OK);
  }

  // A hooks argument: bits 1 << Hook (the core keeps the ones a script may implement).
  static unsigned HooksFrom(const Napi::Value &v) { return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : 0; }

  // scripts(onHook, onComplete) -> [hookInfo, hookBuffer]
  Napi::Value Scripts(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    if (info[0].IsFunction()) on_hook_ = Napi::Persistent(info[0].As<Napi::Function>());
    if (info[1].IsFunction()) on_complete_ = Napi::Persistent(info[1].As<Napi::Function>());
    Napi::Array a = Napi::Array::New(env, 2);
    a.Set(0u, hook_.Value());
    a.Set(1u, hook_buf_.Value());
    return a;
  }

  // attachScript(position, scriptId, hooks): the script block at `position`
  // (from the config) is loaded; it implements `hooks` (bits 1 << Hook).
  Napi::Value AttachScript(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    size_t pos = info[0].IsNumber() ? info[0].As<Napi::Number>().Uint32Value() : SIZE_MAX;
    if (!sb::script_attach(state_->core, pos, info[1].As<Napi::Number>().Uint32Value(), HooksFrom(info[2])))
      make_error(env, "E_BAD_ARGUMENT", "attachScript: no script block at that position").ThrowAsJavaScriptException();
    return env.Undefined();
  }

  // scriptHooks(scriptId, hooks): the hooks a script implements (after its init).
  Napi::Value ScriptHooks(const Napi::CallbackInfo &info) {
    uint32_t id = 0;
    if (ScriptId(info[0], id)) sb::script_set_hooks(state_->core, id, HooksFrom(info[1]));
    return info.Env().Undefined();
  }

  // addScript(name, position, scriptId, hooks, timeoutMs, onError, logLevel, onlyTo) -> position
  Napi::Value AddScript(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    size_t pos = info[1].IsNumber() ? static_cast<size_t>(std::max(0.0, info[1].As<Napi::Number>().DoubleValue()))
                                    : SIZE_MAX;
    sb::ScriptOptions opts;
    opts.id = info[2].As<Napi::Number>().Uint32Value();
    opts.hooks = HooksFrom(info[3]);
    if (info[4].IsNumber()) opts.timeout_ms = info[4].As<Napi::Number>().DoubleValue();
    if (info[5].IsNumber()) opts.on_error = info[5].As<Napi::Number>().Int32Value();
    if (info[6].IsNumber()) {
      opts.own_log_level = true;
      opts.log_level = info[6].As<Napi::Number>().Int32Value();
    }
    opts.only_to = as_string(info[7]);
    size_t at = 0;
    if (sb::script_add(state_->core, as_string(info[0]), pos, opts, &at) == sb::SCRIPT_BUSY) {
      make_error(env, "E_CORE_BUSY", "a module cannot be added from inside a module's hook; add it after the hook returns")
          .ThrowAsJavaScriptException();
      return env.Undefined();
    }
    return Napi::Number::New(env, static_cast<double>(at));
  }

  // defer() -> handle (inside a script's message hook), or 0.
  Napi::Value Defer(const Napi::CallbackInfo &info) {
    return Napi::Number::New(info.Env(), state_ ? static_cast<double>(sb::script_defer(state_->core)) : 0.0);
  }

  // resolve(handle, verdict, payload|null, fields|null, drainNow = true) -> true when it was waiting.
  // fields: [type, flags, expiry, refid].
  Napi::Value Resolve(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!state_ || !info[0].IsNumber()) return Napi::Boolean::New(env, false);
    std::string unused;
    std::string_view payload = info[2].IsTypedArray() ? payload_arg(info[2], unused) : std::string_view();
    sb::ScriptFields fields;
    if (info[3].IsArray()) fields = script_fields(info[3]);
    bool drain_now = false;
    sb::ScriptStatus rc = sb::script_resolve(
        state_->core, static_cast<uint64_t>(info[0].As<Napi::Number>().DoubleValue()),
        info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 0, info[2].IsTypedArray() ? payload.data() : nullptr,
        payload.size(), info[3].IsArray() ? &fields : nullptr, &drain_now);
    if (rc == sb::SCRIPT_TOO_LARGE) return TooLarge(env);
    // The caller drains now (default) or once after a batch of resolves (drainNow false).
    if (rc == sb::SCRIPT_OK && drain_now && !(info[4].IsBoolean() && !info[4].As<Napi::Boolean>().Value()))
      drain_and_emit(env, *state_);
    return Napi::Boolean::New(env, rc == sb::SCRIPT_OK);
  }

  // hookSet(payload|null, fields|null): inside a script's message hook, the
  // module changed the message.
  Napi::Value HookSet(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!state_) return Napi::Boolean::New(env, false);
    std::string unused;
    std::string_view payload = info[0].IsTypedArray() ? payload_arg(info[0], unused) : std::string_view();
    sb::ScriptFields fields;
    if (info[1].IsArray()) fields = script_fields(info[1]);
    sb::ScriptStatus rc = sb::script_set(state_->core, info[0].IsTypedArray() ? payload.data() : nullptr, payload.size(),
                                         info[1].IsArray() ? &fields : nullptr);
    if (rc == sb::SCRIPT_TOO_LARGE) return TooLarge(env);
    return Napi::Boolean::New(env, rc == sb::SCRIPT_OK);
  }

  Napi::Value TooLarge(Napi::Env env) {
    make_error(env, "E_PAYLOAD_TOO_LARGE", "the new payload is larger than max_message_size; send less")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }

  // send(scriptId, {to, from, id, refid, groupid, flags, type, expiry}, payload) -> 0 | -1
  Napi::Value Send(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    uint32_t id = 0;
    if (!ScriptId(info[0], id) || !info[1].IsObject()) return Napi::Number::New(env, -1);
    Napi::Object o = info[1].As<Napi::Object>();
    std::string to = as_string(o.Get("to")), from = as_string(o.Get("from"));
    mesibo_message_params_t p{};
    sb::params_from_js(o, p);
    p.to = to.empty() ? nullptr : &to[0];
    p.from = from.empty() ? nullptr : &from[0];
    std::string scratch;
    std::string_view payload = payload_arg(info[2], scratch);
    bool sent = sb::script_send(state_->core, id, p, payload.data(), payload.size()) == sb::SCRIPT_OK;
    return Napi::Number::New(env, sent ? 0 : -1);
  }

  // setLogLevel(serverLevel): modules without a level of their own follow it.
  Napi::Value SetLogLevel(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (!Open(env)) return env.Undefined();
    if (!info[0].IsNumber()) {
      make_error(env, "E_BAD_ARGUMENT", "setLogLevel expects the server's log_level, 0 to 3").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    sb::core_set_log_level(state_->core, std::clamp(info[0].As<Napi::Number>().Int32Value(), 0, 3));
    return env.Undefined();
  }

  // scriptLogLevel(scriptId): the script's level now (it follows setLogLevel).
  Napi::Value ScriptLogLevel(const Napi::CallbackInfo &info) {
    uint32_t id = 0;
    int level = 0;
    if (!ScriptId(info[0], id) || !sb::script_log_level(state_->core, id, &level)) return info.Env().Undefined();
    return Napi::Number::New(info.Env(), level);
  }

  // log(scriptId, level, text): kept when level <= the block's log level.
  Napi::Value Log(const Napi::CallbackInfo &info) {
    uint32_t id = 0;
    if (ScriptId(info[0], id))
      sb::script_log(state_->core, id, info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 0,
                     as_string(info[2]));
    return info.Env().Undefined();
  }

  Napi::Value CountError(const Napi::CallbackInfo &info) {
    uint32_t id = 0;
    if (ScriptId(info[0], id)) sb::script_count_error(state_->core, id);
    return info.Env().Undefined();
  }

  // counters() -> {jsCalls, waiting}
  Napi::Value Counters(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("jsCalls", static_cast<double>(state_ ? state_->js_calls : 0));
    o.Set("waiting", static_cast<double>(state_ ? sb::core_waiting(state_->core) : 0));
    return o;
  }

  void Shutdown() {
    if (!state_) return;
    state_->owner = nullptr;
    if (state_->timer) {
      uv_timer_stop(state_->timer);
      uv_close(reinterpret_cast<uv_handle_t *>(state_->timer), [](uv_handle_t *h) {
        delete static_cast<std::shared_ptr<State> *>(h->data);
        delete reinterpret_cast<uv_timer_t *>(h);
      });
      state_->timer = nullptr;
    }
    sb::core_close(state_->core);
    if (state_->tsfn_live) {
      state_->tsfn_live = false;
      state_->tsfn.Release();
    }
    // Nothing may reach the holder once it is gone: no module can reach the
    // closed core any more (the slot registry forgot its modules), and the
    // core forgets the host first.
    sb::core_forget_host(state_->core);
    delete wake_holder_;
    wake_holder_ = nullptr;
  }

  std::shared_ptr<State> state_;
  std::shared_ptr<State> *wake_holder_ = nullptr;
  Napi::Reference<Napi::Buffer<char>> out_;
  char *out_ptr_ = nullptr;
  size_t out_cap_ = 0;
  Napi::Reference<Napi::Float64Array> info_;
  double *info_ptr_ = nullptr;
  napi_env env_ = nullptr;
  Napi::FunctionReference on_hook_, on_complete_;
  Napi::Reference<Napi::Float64Array> hook_;
  Napi::Reference<Napi::Buffer<char>> hook_buf_;
};

void emit_completions(Napi::Env env, State &st, std::vector<sb::Completion> &done) {
  for (auto &c : done) {
    if (!st.owner) return;
    st.owner->EmitCompletion(env, c);
  }
}

Napi::Value Noop(const Napi::CallbackInfo &info) { return info.Env().Undefined(); }

// decodeFrame(buf, maxPayload) -> {op, format, id, ..., to, payload} or {error, code, detail}
Napi::Value DecodeFrame(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray()) return env.Undefined();
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  const uint8_t *data = static_cast<const uint8_t *>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  size_t max = info[1].IsNumber() ? static_cast<size_t>(info[1].As<Napi::Number>().Int64Value()) : 65536;
  sb::WireMessage m{};
  sb::WireScratch scratch;
  std::string detail;
  int rc = sb::wire_decode(data, ta.ByteLength(), max, m, scratch, &detail);
  Napi::Object o = Napi::Object::New(env);
  if (rc != sb::WIRE_OK) {
    o.Set("error", static_cast<double>(rc));
    o.Set("code", sb::wire_error_code(rc));
    o.Set("message", sb::wire_error_message(rc));
    o.Set("detail", detail);
    return o;
  }
  o.Set("op", m.op == sb::WIRE_OP_MESSAGE ? "msg" : "status");
  o.Set("format", m.format == sb::WIRE_JSON ? "json" : "binary");
  o.Set("id", static_cast<double>(m.id));
  o.Set("refid", static_cast<double>(m.refid));
  o.Set("groupid", static_cast<double>(m.groupid));
  o.Set("flags", static_cast<double>(m.flags));
  o.Set("type", static_cast<double>(m.type));
  o.Set("expiry", static_cast<double>(m.expiry));
  o.Set("status", static_cast<double>(m.status));
  o.Set("to", std::string(m.to, m.to_len));
  o.Set("payload", Napi::Buffer<char>::Copy(env, m.payload, m.payload_len));
  return o;
}

// encodeFrame(kind: 'msg'|'status'|'error', fields, format) -> Buffer
Napi::Value EncodeFrame(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  std::string kind = as_string(info[0]);
  if (!info[1].IsObject()) return env.Undefined();
  Napi::Object f = info[1].As<Napi::Object>();
  auto fmt = static_cast<sb::WireFormat>(info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : 0);
  std::string from = as_string(f.Get("from")), to = as_string(f.Get("to"));
  mesibo_message_params_t p{};
  sb::params_from_js(f, p);
  p.from = &from[0];
  p.to = &to[0];
  std::string out;
  if (kind == "msg") {
    std::string scratch;
    std::string_view payload = payload_arg(f.Get("payload"), scratch);
    sb::wire_encode_message(fmt, p, payload.data(), payload.size(), out);
  } else if (kind == "status") {
    sb::wire_encode_status(fmt, p, out);
  } else {
    sb::wire_encode_error(fmt, static_cast<int>(info[1].As<Napi::Object>().Get("error").ToNumber().Int32Value()),
                          p.id, as_string(f.Get("detail")).c_str(), out);
  }
  return Napi::Buffer<char>::Copy(env, out.data(), out.size());
}

// wireError(n) -> {code, message}
Napi::Value WireErrorInfo(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  int n = info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
  Napi::Object o = Napi::Object::New(env);
  o.Set("code", sb::wire_error_code(n));
  o.Set("message", sb::wire_error_message(n));
  return o;
}

// jsonExtract(buf, key, offset?) -> {value, next} | null
Napi::Value JsonExtract(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || !info[1].IsString()) return env.Null();
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  const char *data = static_cast<const char *>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  size_t off = info[2].IsNumber() ? static_cast<size_t>(info[2].As<Napi::Number>().Int64Value()) : 0;
  if (off > ta.ByteLength()) return env.Null();
  std::string key = as_string(info[1]);
  const char *next = nullptr;
  char *v = sb::json_extract(data + off, ta.ByteLength() - off, key.c_str(), &next);
  if (!v) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("value", v);
  o.Set("next", static_cast<double>(next - data));
  std::free(v);
  return o;
}

// Node dlopens addons without RTLD_GLOBAL, so modules loaded later could not
// see mesibo_log and friends. Re-opening our own file with RTLD_NOLOAD |
// RTLD_GLOBAL promotes the already-loaded addon into the global scope. The
// addon is built with hidden visibility, so only the mesibo_* functions and
// the N-API entry point become visible.
bool make_symbols_global(std::string &why) {
  Dl_info di;
  if (!dladdr(reinterpret_cast<void *>(&mesibo_log), &di) || !di.dli_fname) {
    why = "dladdr could not find the addon file";
    return false;
  }
  if (!dlopen(di.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL)) {
    const char *e = dlerror();
    why = e ? e : "dlopen failed";
    return false;
  }
  return true;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  uv_loop_t *loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) == napi_ok && loop) sb::io_attach(loop);
  std::string why;
  exports.Set("symbolsGlobal", Napi::Boolean::New(env, make_symbols_global(why)));
  if (!why.empty()) exports.Set("symbolsGlobalError", why);
  exports.Set("CoreHandle", CoreHandle::Define(env));
  exports.Set("parseConfig", Napi::Function::New(env, ParseConfig));
  exports.Set("noop", Napi::Function::New(env, Noop));
  exports.Set("decodeFrame", Napi::Function::New(env, DecodeFrame));
  exports.Set("encodeFrame", Napi::Function::New(env, EncodeFrame));
  exports.Set("jsonExtract", Napi::Function::New(env, JsonExtract));
  exports.Set("wireError", Napi::Function::New(env, WireErrorInfo));
  exports.Set("moduleVersion", Napi::Number::New(env, MESIBO_MODULE_VERSION));
  exports.Set("infoSlots", Napi::Number::New(env, sb::INFO_COUNT));
  Napi::Array bounds = Napi::Array::New(env, sb::kHookBuckets);
  for (uint32_t b = 0; b < sb::kHookBuckets; ++b) bounds.Set(b, sb::kHookBucketBounds[b]);
  exports.Set("hookBucketBounds", bounds);
  sb::sqlite_binding_init(env, exports);
  sb::delivery_binding_init(env, exports);
  return exports;
}

}  // namespace

sb::CoreRef *sb::core_ref_of(const Napi::Value &handle) {
  bool tagged = false;
  if (!handle.IsObject() || napi_check_object_type_tag(handle.Env(), handle, &kCoreHandleTag, &tagged) != napi_ok ||
      !tagged)
    return nullptr;
  return reinterpret_cast<sb::CoreRef *>(Napi::ObjectWrap<CoreHandle>::Unwrap(handle.As<Napi::Object>()));
}

sb::Core *sb::core_of(sb::CoreRef *ref) { return ref ? reinterpret_cast<CoreHandle *>(ref)->core() : nullptr; }

int sb::core_submit_filled(sb::CoreRef *ref, napi_env env, const char *from, size_t from_len, const uint8_t *frame,
                           size_t len, int out_format, sb::SubmitResult &res) {
  if (!core_of(ref)) {
    make_error(Napi::Env(env), "E_CORE_CLOSED", "this core is closed; open a new one").ThrowAsJavaScriptException();
    return kSubmitNoCore;
  }
  // The engine encodes a status frame itself, only for a receipt.
  return reinterpret_cast<CoreHandle *>(ref)->SubmitFrame(Napi::Env(env), from, from_len, frame, len, out_format, res,
                                                          false);
}

NODE_API_MODULE(switchboard, Init)
