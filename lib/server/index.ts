export { Server, Status, type StartOptions } from './server';
export type { ServerSettings } from './settings';
