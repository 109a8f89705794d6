/** A configuration problem found before serving: says where (file, key or line), what, and what is expected. */
export class ConfigError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'ConfigError';
    this.code = code;
  }
}
