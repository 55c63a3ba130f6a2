#include "scripts.h"

#include "slots.h"

namespace sb {

namespace {

// Script `id` in the chain, staged or retiring, on an open core.
Instance *find(Core &core, uint32_t id) { return core.closed ? nullptr : core_find_script(core, id); }

Instance *find_staged(Core &core, uint32_t id) {
  if (core.closed) return nullptr;
  for (auto &ip : core.staged)
    if (ip->script && ip->script_id == id) return ip.get();
  return nullptr;
}

// One hook call across the bridge. `cm` is the message a message hook may
// change (script_set); status and login hooks see none, also when they run
// from inside another script's message hook.
mesibo_int_t call(Core &core, Hook hook, Instance &inst, const mesibo_message_params_t *p, ChainMsg *cm,
                  const mesibo_user_t *user) {
  ScriptBridge &b = core.scripts;
  if (!b.slots) return MESIBO_RESULT_PASS;
  pack_hook(p, cm, user, b.slots, b.buf, b.cap);
  ChainMsg *saved = b.msg;
  b.msg = cm;
  int32_t ret = MESIBO_RESULT_PASS;
  ScriptCall how = core.host.script_call(core.host.data, hook, inst.script_id, &ret);
  b.msg = saved;
  if (how == SCRIPT_CALL_VERDICT) return ret;
  if (how == SCRIPT_CALL_FAILED) return script_failed(core, inst, hook);
  return MESIBO_RESULT_PASS;
}

void apply_fields(mesibo_message_params_t &p, const ScriptFields &f) {
  p.type = f.type;
  p.flags = f.flags;
  p.expiry = f.expiry;
  p.refid = f.refid;
}

}  // namespace

void script_bridge_attach(Core &core, double *slots, char *buf, size_t cap) {
  core.scripts.slots = slots;
  core.scripts.buf = buf;
  core.scripts.cap = cap;
}

mesibo_int_t script_message(Core &core, Instance &inst, ChainMsg &m) {
  return call(core, HOOK_MESSAGE, inst, m.p, &m, nullptr);
}

void script_status(Core &core, Instance &inst, mesibo_message_params_t *p) {
  call(core, HOOK_STATUS, inst, p, nullptr, nullptr);
}

void script_login(Core &core, Instance &inst, mesibo_user_t *user) {
  call(core, HOOK_LOGIN, inst, nullptr, nullptr, user);
}

mesibo_int_t script_failed(Core &core, Instance &inst, Hook hook) {
  ++inst.errors;
  core_logf(core, 0, "script module \"%s\" %s failed in the host; treated as its on_error verdict", inst.name.c_str(),
            hook_name(hook));
  return inst.on_error;
}

bool script_attach(Core &core, size_t position, uint32_t id, unsigned hooks) {
  if (core.closed || position >= core.chain.size() || !core.chain[position]->script) return false;
  Instance &inst = *core.chain[position];
  inst.script_id = id;
  inst.script_hooks = hooks & kScriptHooks;
  return true;
}

ScriptStatus script_set_hooks(Core &core, uint32_t id, unsigned hooks) {
  Instance *inst = find(core, id);
  if (!inst) return SCRIPT_UNKNOWN;
  inst->script_hooks = hooks & kScriptHooks;
  return SCRIPT_OK;
}

ScriptStatus script_add(Core &core, const std::string &name, size_t position, const ScriptOptions &opts,
                        size_t *at) {
  if (core.closed) return SCRIPT_UNKNOWN;
  if (core_in_hook(core)) return SCRIPT_BUSY;
  Instance *inst = core_add_script(core, name, position);
  inst->script_id = opts.id;
  inst->script_hooks = opts.hooks & kScriptHooks;
  if (opts.timeout_ms > 0) inst->timeout_ns = static_cast<uint64_t>(opts.timeout_ms * 1e6);
  inst->on_error = opts.on_error == MESIBO_RESULT_CONSUMED ? MESIBO_RESULT_CONSUMED : MESIBO_RESULT_PASS;
  if (opts.own_log_level) {
    inst->log_level = opts.log_level;
    inst->own_log_level = true;
  }
  if (!opts.only_to.empty()) inst->script_to = opts.only_to;
  *at = inst->position;
  return SCRIPT_OK;
}

ScriptStatus script_remove(Core &core, uint32_t id) {
  if (core.closed) return SCRIPT_UNKNOWN;
  if (core_in_hook(core)) return SCRIPT_BUSY;
  for (auto &ip : core.chain) {
    if (!ip->script || ip->script_id != id) continue;
    core_remove_instance(core, ip.get());
    return SCRIPT_OK;
  }
  return SCRIPT_UNKNOWN;
}

ScriptStatus script_commit_reload(Core &core, uint32_t id) {
  Instance *fresh = find_staged(core, id);
  if (!fresh) return SCRIPT_UNKNOWN;
  if (core_in_hook(core)) return SCRIPT_BUSY;
  core_reload_commit(core, fresh);  // frees it when there was nothing left to replace
  return !find_staged(core, id) && core_find_script(core, id) ? SCRIPT_OK : SCRIPT_UNKNOWN;
}

void script_abort_reload(Core &core, uint32_t id) {
  if (Instance *fresh = find_staged(core, id)) core_reload_abort(core, fresh);
}

uint64_t script_defer(Core &core) { return core.closed ? 0 : core_take_handle(core, core.running); }

ScriptStatus script_set(Core &core, const char *payload, size_t len, const ScriptFields *fields) {
  ChainMsg *m = core.scripts.msg;
  if (!m) return SCRIPT_UNKNOWN;
  if (payload && len > core.max_payload) return SCRIPT_TOO_LARGE;
  if (payload) chain_replace_payload(*m, payload, len);
  if (fields) apply_fields(*m->p, *fields);
  return SCRIPT_OK;
}

ScriptStatus script_resolve(Core &core, uint64_t handle, int verdict, const char *payload, size_t len,
                            const ScriptFields *fields, bool *drain_now) {
  if (core.closed) return SCRIPT_UNKNOWN;
  if (payload && len > core.max_payload) return SCRIPT_TOO_LARGE;
  Resolution r;
  r.handle = handle;
  r.verdict = verdict;
  if (payload) {
    r.replace = true;
    r.payload.assign(payload, len);
  }
  if (fields) {
    r.fields = true;
    r.type = fields->type;
    r.flags = fields->flags;
    r.expiry = fields->expiry;
    r.refid = fields->refid;
  }
  // No wake-up (an eventfd write per message) outside a hook: the caller
  // drains. Inside one the chain is mid-way: the wake-up drains after it.
  bool in_hook = core_in_hook(core);
  if (core_resolve(core, std::move(r), in_hook) != 0) return SCRIPT_UNKNOWN;
  *drain_now = !in_hook;
  return SCRIPT_OK;
}

ScriptStatus script_send(Core &core, uint32_t id, const mesibo_message_params_t &p, const char *payload,
                         size_t len) {
  Instance *inst = find(core, id);
  if (!inst) return SCRIPT_UNKNOWN;
  if (!p.to && !p.groupid) return SCRIPT_NO_DESTINATION;
  if (len > core.max_payload) return SCRIPT_TOO_LARGE;
  return core_send_from_module(inst, &p, payload, len) == 0 ? SCRIPT_OK : SCRIPT_UNKNOWN;
}

void script_log(Core &core, uint32_t id, int level, std::string text) {
  Instance *inst = find(core, id);
  if (!inst || (level > inst->log_level && level != 0)) return;
  core_log(core, inst->name, level, std::move(text));
}

void script_count_error(Core &core, uint32_t id) {
  if (Instance *inst = find(core, id)) ++inst->errors;
}

bool script_log_level(Core &core, uint32_t id, int *level) {
  Instance *inst = find(core, id);
  if (!inst) return false;
  *level = inst->log_level;
  return true;
}

}  // namespace sb
