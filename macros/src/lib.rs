//! Derive macros for kiln.
//!
//! This crate provides `#[derive(Tree)]`, re-exported by the `kiln` crate as `kiln::Tree`
//! (the same name as the trait it implements, `kiln::tree::Tree`). Use it through `kiln`;
//! the generated code refers to `::kiln::tree::*` and `::kiln::Array`.
//!
//! # What the derive generates
//!
//! A [`Tree`](macro@Tree) is a value with arrays at its leaves. The derive implements
//! `visit`, `with_leaves` and `def` by recursing into the fields, in declaration order:
//!
//! * **Structs with named fields**: every field is a child with key
//!   `KeyEntry::Field("name")`, so leaf paths print as `layers.0.weight`.
//! * **Tuple structs**: fields are children with keys `KeyEntry::Index(i)`.
//! * **Unit structs**: no children and no leaves.
//! * **Enums**: only the active variant is visited; its fields are children as for structs
//!   (`Field` keys for named fields, `Index` keys for tuple fields). `with_leaves` rebuilds
//!   the same variant, and the node kind in `def()` is `"Enum::Variant"`, so two values
//!   with different variants have different structures.
//! * **Unions** are rejected with a compile error.
//!
//! Every non-static field must itself be a `Tree` (`Array`, `Vec<_>`, `Option<_>`, tuples,
//! fixed-size arrays, `Box<_>`, `BTreeMap<String, _>`, `()`, or another derived type).
//! A field that is not produces a compile error pointing at its type, with a hint to mark
//! it `#[tree(static)]`.
//!
//! # Static fields: `#[tree(static)]`
//!
//! A field marked `#[tree(static)]` is not a leaf: it is part of the tree's structure.
//! `with_leaves` clones it unchanged (so its type must be [`Clone`]), and `def()` records
//! it in `TreeDef::Node::statics` as `format!("{:?}", (static_a, static_b, ...))`, the
//! `Debug` output of a tuple of all static fields of the struct (or active variant) in
//! declaration order. **Static field types must therefore implement [`Debug`]**, and two
//! trees whose static fields print differently have different `TreeDef`s (so, for
//! example, a compiled transformation is retraced when a static hyperparameter changes).
//! A node without static fields has empty `statics`.
//!
//! `#[tree(static)]` is the only accepted form of the `tree` attribute, and only on
//! fields; anything else (`#[tree(foo)]`, `#[tree]`, `#[tree(static)]` on the type) is a
//! compile error.
//!
//! # Generics
//!
//! Lifetimes, type and const parameters are kept as written. For every non-static field
//! whose type mentions a type or const parameter, the impl gets the bound
//! `FieldType: ::kiln::tree::Tree` (so `struct Pair<T> { a: T, b: Vec<T> }` needs
//! `T: Tree` and `Vec<T>: Tree`), and for every such static field the bound
//! `FieldType: Clone + Debug`. A generic type also gets `Self: Clone`, which usually
//! comes from `#[derive(Clone)]`. A type parameter used only in static fields does not
//! need to be a `Tree`.
//!
//! # Example
//!
//! ```ignore
//! use kiln::{Array, Tree, tree};
//!
//! #[derive(Clone, Tree)]
//! struct Linear {
//!     weight: Array,
//!     bias: Option<Array>,
//!     #[tree(static)]
//!     activation: &'static str,
//! }
//!
//! #[derive(Clone, Tree)]
//! struct Mlp {
//!     layers: Vec<Linear>,
//! }
//!
//! #[derive(Clone, Tree)]
//! enum Head {
//!     Linear(Linear),
//!     Identity,
//! }
//!
//! let mlp = Mlp {
//!     layers: vec![
//!         Linear { weight: Array::ones([2, 3]), bias: Some(Array::zeros([3])), activation: "relu" },
//!         Linear { weight: Array::ones([3, 1]), bias: None, activation: "none" },
//!     ],
//! };
//! let paths: Vec<String> =
//!     tree::leaves_with_path(&mlp).into_iter().map(|(p, _)| p.to_string()).collect();
//! assert_eq!(paths, ["layers.0.weight", "layers.0.bias", "layers.1.weight"]);
//!
//! // Rebuild a model of the same type from new leaves.
//! let zeros = tree::map(&mlp, |x| Array::zeros(x.shape()));
//! assert_eq!(zeros.layers[0].activation, "relu");
//! assert_eq!(mlp.def(), zeros.def());
//!
//! let head = Head::Identity;
//! assert_eq!(tree::leaves(&head).len(), 0);
//! ```
//!
//! (The example is `ignore`d here because this crate cannot depend on `kiln`; the same
//! code runs in `kiln`'s tests, `core/tests/tree_derive.rs`.)

use proc_macro::TokenStream;
use proc_macro2::{TokenStream as TokenStream2, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use std::collections::HashSet;
use syn::ext::IdentExt;
use syn::parse::ParseStream;
use syn::spanned::Spanned;
use syn::{
    Attribute, Data, DeriveInput, Error, Fields, GenericParam, Ident, Meta, Token, Type,
    WherePredicate, parse_macro_input, parse_quote,
};

/// Derives `kiln::tree::Tree` for a struct or enum.
///
/// Fields are children in declaration order (`KeyEntry::Field("name")` for named fields,
/// `KeyEntry::Index(i)` for tuple fields). Mark a field that is not a tree of arrays with
/// `#[tree(static)]`: it is cloned by `with_leaves` and printed with `Debug` into the
/// `statics` of `def()`, so its type must be `Clone + Debug`. Enums visit the active
/// variant and report the node kind `"Enum::Variant"`. Unions are not supported.
///
/// See the [crate docs](crate) for details and an example.
#[proc_macro_derive(Tree, attributes(tree))]
pub fn derive_tree(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input).unwrap_or_else(Error::into_compile_error).into()
}

const ATTR_HELP: &str = "the only accepted form is `#[tree(static)]`";

/// One field of a struct or variant.
struct Field<'a> {
    /// The `KeyEntry` for this field (`Field("name")` or `Index(i)`).
    key: TokenStream2,
    /// The member used in struct expressions and patterns (`name` or `0`).
    member: TokenStream2,
    /// The local binding used in the generated `match` arms.
    binding: Ident,
    ty: &'a Type,
    is_static: bool,
}

/// A struct or an enum variant: a path to construct/match it and its fields.
struct Shape<'a> {
    /// `Self` or `Self::Variant`.
    path: TokenStream2,
    /// The node kind in `def()`.
    kind: String,
    fields: Vec<Field<'a>>,
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let mut errors = ErrorList::default();
    reject_tree_attrs(&input.attrs, "a type", &mut errors);

    let name = input.ident.unraw().to_string();
    let shapes: Vec<Shape> = match &input.data {
        Data::Struct(s) => {
            vec![shape(quote!(Self), name, &s.fields, &mut errors)]
        }
        Data::Enum(e) => e
            .variants
            .iter()
            .map(|v| {
                reject_tree_attrs(&v.attrs, "an enum variant", &mut errors);
                let ident = &v.ident;
                let kind = format!("{name}::{}", ident.unraw());
                shape(quote!(Self::#ident), kind, &v.fields, &mut errors)
            })
            .collect(),
        Data::Union(u) => {
            return Err(Error::new(
                u.union_token.span,
                "`#[derive(Tree)]` does not support unions: a union does not know which of its \
                 fields holds arrays; use a struct or an enum instead",
            ));
        }
    };
    errors.finish()?;

    let visit_arms = shapes.iter().map(visit_arm);
    let with_leaves_arms = shapes.iter().map(with_leaves_arm);
    let def_arms = shapes.iter().map(def_arm);

    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_clause = where_clause.cloned().unwrap_or_else(|| parse_quote!(where));
    where_clause.predicates.extend(bounds(input, &shapes));

    // `match *self {}` is the only way to write the body for an enum without variants.
    let scrutinee = if shapes.is_empty() { quote!(*self) } else { quote!(self) };

    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::kiln::tree::Tree for #ident #ty_generics #where_clause {
            fn visit(
                &self,
                __kiln_path: &mut ::kiln::tree::KeyPath,
                __kiln_f: &mut dyn ::core::ops::FnMut(&::kiln::tree::KeyPath, &::kiln::Array),
            ) {
                match #scrutinee {
                    #(#visit_arms)*
                }
            }

            fn with_leaves(
                &self,
                __kiln_leaves: &mut dyn ::core::iter::Iterator<Item = ::kiln::Array>,
            ) -> Self {
                match #scrutinee {
                    #(#with_leaves_arms)*
                }
            }

            fn def(&self) -> ::kiln::tree::TreeDef {
                match #scrutinee {
                    #(#def_arms)*
                }
            }
        }
    })
}

/// Collects the fields of a struct or variant, parsing their `tree` attributes.
fn shape<'a>(
    path: TokenStream2,
    kind: String,
    fields: &'a Fields,
    errors: &mut ErrorList,
) -> Shape<'a> {
    let fields = fields
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let is_static = match parse_field_attrs(&field.attrs) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(e);
                    false
                }
            };
            let (key, member) = match &field.ident {
                Some(ident) => {
                    let name = ident.unraw().to_string();
                    (quote!(::kiln::tree::KeyEntry::Field(#name)), quote!(#ident))
                }
                None => {
                    let mut index = syn::Index::from(i);
                    index.span = field.ty.span();
                    (quote!(::kiln::tree::KeyEntry::Index(#i)), quote!(#index))
                }
            };
            Field {
                key,
                member,
                // Spanned at the type so that "`X` is not a Tree" errors point at the field.
                binding: format_ident!("__kiln_field{}", i, span = field.ty.span()),
                ty: &field.ty,
                is_static,
            }
        })
        .collect();
    Shape { path, kind, fields }
}

/// Returns whether the field is `#[tree(static)]`; errors on any other `tree` attribute.
fn parse_field_attrs(attrs: &[Attribute]) -> syn::Result<bool> {
    let mut is_static = false;
    for attr in attrs.iter().filter(|a| a.path().is_ident("tree")) {
        let Meta::List(list) = &attr.meta else {
            return Err(Error::new_spanned(
                attr,
                format!("malformed `tree` attribute: {ATTR_HELP}"),
            ));
        };
        let parsed = list.parse_args_with(|input: ParseStream| {
            input.parse::<Token![static]>()?;
            input.parse::<Option<Token![,]>>()?;
            input.parse::<syn::parse::Nothing>()
        });
        if parsed.is_err() {
            let message = format!("unsupported `tree` attribute: {ATTR_HELP}");
            return Err(if list.tokens.is_empty() {
                Error::new_spanned(attr, message)
            } else {
                Error::new_spanned(&list.tokens, message)
            });
        }
        if is_static {
            return Err(Error::new_spanned(attr, "duplicate `#[tree(static)]` attribute"));
        }
        is_static = true;
    }
    Ok(is_static)
}

/// `#[tree(...)]` is only meaningful on fields.
fn reject_tree_attrs(attrs: &[Attribute], what: &str, errors: &mut ErrorList) {
    for attr in attrs.iter().filter(|a| a.path().is_ident("tree")) {
        errors.push(Error::new_spanned(
            attr,
            format!(
                "`tree` attributes are not accepted on {what}; mark individual fields \
                 `#[tree(static)]` instead"
            ),
        ));
    }
}

/// The pattern `Path { member: binding, .. }` binding the fields selected by `bind`.
fn pattern(shape: &Shape, bind: impl Fn(&Field) -> bool) -> TokenStream2 {
    let path = &shape.path;
    let bound = shape.fields.iter().filter(|f| bind(f)).map(|f| {
        let (member, binding) = (&f.member, &f.binding);
        quote!(#member: #binding)
    });
    quote!(#path { #(#bound,)* .. })
}

fn visit_arm(shape: &Shape) -> TokenStream2 {
    let pat = pattern(shape, |f| !f.is_static);
    let calls = shape.fields.iter().filter(|f| !f.is_static).map(|f| {
        let (key, binding) = (&f.key, &f.binding);
        // Only the path and the binding carry the field's span: the locals of the
        // generated code keep the call-site span (and its hygiene).
        let (p, f_) = (quote!(__kiln_p), quote!(__kiln_f));
        let call = quote_spanned! {f.ty.span()=> ::kiln::tree::Tree::visit(#binding, #p, #f_) };
        quote! {
            __kiln_path.with(#key, |__kiln_p| #call);
        }
    });
    quote! {
        #pat => { #(#calls)* }
    }
}

fn with_leaves_arm(shape: &Shape) -> TokenStream2 {
    let pat = pattern(shape, |_| true);
    let path = &shape.path;
    // Struct expressions evaluate their fields in the order written: declaration order.
    let inits = shape.fields.iter().map(|f| {
        let (member, binding) = (&f.member, &f.binding);
        let leaves = quote!(__kiln_leaves);
        let value = if f.is_static {
            quote_spanned! {f.ty.span()=> ::core::clone::Clone::clone(#binding) }
        } else {
            quote_spanned! {f.ty.span()=> ::kiln::tree::Tree::with_leaves(#binding, #leaves) }
        };
        quote!(#member: #value)
    });
    quote! {
        #pat => #path { #(#inits,)* },
    }
}

fn def_arm(shape: &Shape) -> TokenStream2 {
    let pat = pattern(shape, |_| true);
    let kind = &shape.kind;
    let statics: Vec<_> = shape.fields.iter().filter(|f| f.is_static).collect();
    let statics = if statics.is_empty() {
        quote!(::std::string::String::new())
    } else {
        let values = statics.iter().map(|f| {
            let binding = &f.binding;
            quote_spanned!(f.ty.span()=> #binding)
        });
        quote!(::std::format!("{:?}", (#(#values,)*)))
    };
    let children = shape.fields.iter().filter(|f| !f.is_static).map(|f| {
        let (key, binding) = (&f.key, &f.binding);
        let def = quote_spanned!(f.ty.span()=> ::kiln::tree::Tree::def(#binding));
        quote!((#key, #def))
    });
    quote! {
        #pat => ::kiln::tree::TreeDef::Node {
            kind: #kind,
            statics: #statics,
            children: ::std::vec![#(#children),*],
        },
    }
}

/// Extra where-clause predicates: `Ty: Tree` for non-static fields and `Ty: Clone + Debug`
/// for static fields whose types mention a type or const parameter, plus `Self: Clone`
/// for generic types. Field types without parameters get no bound (a false bound on a
/// concrete type would be an error at the where clause); their errors come from the
/// spanned calls in the method bodies instead.
fn bounds(input: &DeriveInput, shapes: &[Shape]) -> Vec<WherePredicate> {
    let params: HashSet<Ident> = input
        .generics
        .params
        .iter()
        .filter_map(|p| match p {
            GenericParam::Type(t) => Some(t.ident.clone()),
            GenericParam::Const(c) => Some(c.ident.clone()),
            GenericParam::Lifetime(_) => None,
        })
        .collect();
    if params.is_empty() {
        return Vec::new();
    }
    let mut seen = HashSet::new();
    let mut out: Vec<WherePredicate> = Vec::new();
    for field in shapes.iter().flat_map(|s| &s.fields) {
        let ty = field.ty;
        if !mentions(quote!(#ty), &params)
            || !seen.insert((field.is_static, quote!(#ty).to_string()))
        {
            continue;
        }
        out.push(if field.is_static {
            parse_quote_spanned_ty(ty, quote!(::core::clone::Clone + ::core::fmt::Debug))
        } else {
            parse_quote_spanned_ty(ty, quote!(::kiln::tree::Tree))
        });
    }
    out.push(parse_quote!(Self: ::core::clone::Clone));
    out
}

fn parse_quote_spanned_ty(ty: &Type, bound: TokenStream2) -> WherePredicate {
    let span = ty.span();
    syn::parse2(quote_spanned!(span=> #ty: #bound)).expect("a valid where predicate")
}

/// Whether `tokens` mention one of `params` (by identifier, also inside macro calls).
fn mentions(tokens: TokenStream2, params: &HashSet<Ident>) -> bool {
    tokens.into_iter().any(|tt| match tt {
        TokenTree::Ident(i) => params.contains(&i),
        TokenTree::Group(g) => mentions(g.stream(), params),
        _ => false,
    })
}

/// Accumulates errors so that all bad attributes are reported at once.
#[derive(Default)]
struct ErrorList(Option<Error>);

impl ErrorList {
    fn push(&mut self, e: Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}
