// wgsl_reflect's bare import is broken under Node ESM; we import its module build, typed as the package.
declare module 'wgsl_reflect/wgsl_reflect.module.js' {
  export * from 'wgsl_reflect';
}
