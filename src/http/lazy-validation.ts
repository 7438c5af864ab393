// fastify's schema compilers (Ajv for validation, fast-json-stringify for response schemas, which loads Ajv too),
// loaded and run when a route first uses them rather than at start: Ajv's module, its meta-schema and every route's
// schema cost start-up time that only the admin API's first edit needs; the registry listener has no schemas at all.
// Both are fastify's own defaults, the same packages and versions fastify requires. What fastify uses of a validator
// (lib/validation.js) is the call, `errors` after a failed call, and `schemaEnv` (Ajv then gets the parent to
// mutate a root value); of a serializer, the call.
import { createRequire } from 'node:module';
import type AjvCompiler from '@fastify/ajv-compiler';
import type SerializerSelector from '@fastify/fast-json-stringify-compiler';

type ValidatorFactory = AjvCompiler.ValidatorFactory;
type Validate = ReturnType<ReturnType<ValidatorFactory>>;
type SerializerFactory = SerializerSelector.SerializerFactory;

const require = createRequire(import.meta.url);
let validators: ValidatorFactory | undefined;
let serializers: SerializerFactory | undefined;

/** A drop-in for fastify's `schemaController.compilersFactory.buildValidator`. */
export const lazyValidators: ValidatorFactory = (externalSchemas, options) => {
  let compiler: ReturnType<ValidatorFactory> | undefined;
  return (route) => {
    let real: Validate | undefined;
    const compiled = (): Validate => {
      validators ??= (require('@fastify/ajv-compiler') as typeof AjvCompiler)();
      return (real ??= (compiler ??= validators(externalSchemas, options))(route));
    };
    const validate = (...args: unknown[]): unknown => Reflect.apply(compiled(), undefined, args);
    Object.defineProperties(validate, {
      errors: { get: () => real?.errors ?? null },
      schemaEnv: { get: () => compiled().schemaEnv },
      schema: { value: route.schema },
    });
    // Typed as Ajv's function, which it stands in for: the call, `errors` and `schemaEnv` are Ajv's own.
    return validate as unknown as Validate;
  };
};

/** A drop-in for fastify's `schemaController.compilersFactory.buildSerializer`. */
export const lazySerializers: SerializerFactory = (externalSchemas, serializerOpts) => {
  let compiler: ReturnType<SerializerFactory> | undefined;
  return (route) => {
    let real: ((doc: unknown) => string) | undefined;
    return (doc) => {
      serializers ??= (require('@fastify/fast-json-stringify-compiler') as typeof SerializerSelector)();
      real ??= (compiler ??= serializers(externalSchemas, serializerOpts))(route);
      return real(doc);
    };
  };
};
