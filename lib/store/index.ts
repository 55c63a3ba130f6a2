export type { NewMessage, Store, StoredMessage } from './types';
export { SCHEMA_VERSION, SqliteStore } from './sqlite';
