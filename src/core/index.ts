/** The pure cores, as a library. */
export * from './errors.js';
export { Secret, isSecret } from './secret.js';
