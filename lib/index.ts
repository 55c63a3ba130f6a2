export { Core } from './core';
export type { CoreConfig, LogEntry, Message, ModuleInfo, ModuleMessage, ModuleReloadReport, OpenOptions, StatusParams, SubmitResult, Verdict, WireFormat } from './core';
export { ERRORS, SwitchboardError, type ErrorCode } from './errors';
export { parseConfig, type ParsedConfig } from './config';
export { decodeFrame, encodeClientMessage, encodeFrame, jsonExtract, type ClientMessage, type DecodedFrame, type FrameError } from './wire';
export { Bot, Server, Status, type BotHandler, type BotMessage, type FormatMessage, type IngestMessage, type Middleware, type Middlewares, type Pattern, type PipelineMessage, type ServerSettings, type StartOptions } from './server';
export { defineModule, ChainMessage } from './modules';
export type { ModuleContext, ModuleExport, ModuleHandle, ModuleLogin, ModuleStatus, ModuleVerdict, SendParams, SwitchboardModule, UseOptions } from './modules';
export { EVENTS, Logger, type LogEvent, type LogFields, type LogFormat, type LogRecord, type Severity } from './log';
