// Node's modules, loaded only where the code runs in Node. The specifier is a variable so that
// bundlers targeting browsers do not try to resolve node: modules (esbuild fails with "Could not
// resolve"); the comments stop Vite and webpack from warning about a specifier they cannot follow.
export const importNode = <T>(name: string): Promise<T> => import(/* webpackIgnore: true */ /* @vite-ignore */ name);

export const isNode = (): boolean => typeof process !== 'undefined' && !!process.versions?.node;
