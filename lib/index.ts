export { Core } from './core';
export type { CoreConfig, LogEntry, Message, ModuleInfo, ModuleMessage, OpenOptions, SubmitResult, Verdict, WireFormat } from './core';
export { SwitchboardError } from './errors';
export { parseConfig, type ParsedConfig } from './config';
export { decodeFrame, encodeFrame, jsonExtract } from './wire';
