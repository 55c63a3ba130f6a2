export { Server, Status, type StartOptions } from './server';
export type { ServerSettings } from './settings';
export { Bot, type BotHandler, type BotMessage, type Pattern } from './bot';
export type { FormatMessage, IngestMessage, Middleware, Middlewares, PipelineMessage } from './pipeline';
export { RELOAD, type ReloadReport, type Reloadability, type SettingName } from './reload';
