export type { AsyncStore, NewMessage, Store, StoredMessage } from './types';
export { SCHEMA_VERSION, SqliteStore } from './sqlite';
export { PG_SCHEMA_VERSION, PostgresStore, type PostgresStoreOptions } from './postgres';
export { SyncStoreAdapter } from './async';
