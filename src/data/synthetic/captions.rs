//! Captions: English descriptions of a scene for CLIP pre-training, from
//! templates with optional words (counts, sizes, colours, positions, the
//! background), drawn from a generator.

use super::scene::ObjectInfo;
use super::{Sample, BACKGROUNDS, FIRST_SHAPES_ONLY_TEMPLATE, NUM_TEMPLATES};
use crate::rng::Rng;

const COUNT_WORDS: [&str; 5] = ["zero", "one", "two", "three", "four"];

fn article(next: &str) -> &'static str {
    match next.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => "an",
        _ => "a",
    }
}

fn with_article(phrase: String) -> String {
    format!("{} {}", article(&phrase), phrase)
}

/// "a", "a and b", "a, b and c".
fn join_list(items: &[String]) -> String {
    match items.len() {
        0 => String::new(),
        1 => items[0].clone(),
        n => format!("{} and {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

/// Where each background's objects are: two wordings per background.
fn background_phrase(bg: usize, rng: &mut Rng) -> &'static str {
    const PHRASES: [[&str; 2]; 6] = [
        ["on grass", "on the grass"],
        ["on sand", "on the sand"],
        ["in the sky", "against a blue sky"],
        ["on snow", "in the snow"],
        ["on a brick wall", "in front of a brick wall"],
        ["on a dark background", "on a black background"],
    ];
    PHRASES[bg][rng.below(2)]
}

/// The phrase of one object: "a red circle", "a small blue star".
fn object_phrase(o: &ObjectInfo, rng: &mut Rng) -> String {
    let size = if rng.below(2) == 0 { format!("{} ", o.size_word()) } else { String::new() };
    with_article(format!("{size}{} {}", o.colour_name(), o.category_name()))
}

/// Phrases of the objects grouped by category in a random order: a group
/// of one is [`object_phrase`]; a larger group is "two red circles" when
/// its colours agree and "two circles in red and blue" otherwise. Returns
/// the phrases and whether each is plural.
fn group_phrases(objects: &[ObjectInfo], rng: &mut Rng) -> Vec<(String, bool)> {
    grouped(objects, rng)
        .into_iter()
        .map(|members| {
            if members.len() == 1 {
                return (object_phrase(members[0], rng), false);
            }
            let n = COUNT_WORDS[members.len().min(4)];
            let mut colours: Vec<&str> = Vec::new();
            for m in &members {
                if !colours.contains(&m.colour_name()) {
                    colours.push(m.colour_name());
                }
            }
            let same_size = members.iter().all(|m| m.large == members[0].large);
            let size =
                if same_size && rng.below(2) == 0 { format!("{} ", members[0].size_word()) } else { String::new() };
            let plural = members[0].plural_name();
            if colours.len() == 1 {
                (format!("{n} {size}{} {plural}", colours[0]), true)
            } else {
                let cs: Vec<String> = colours.iter().map(|c| c.to_string()).collect();
                (format!("{n} {size}{plural} in {}", join_list(&cs)), true)
            }
        })
        .collect()
}

/// [`group_phrases`] with the shape names only: "a circle", "two stars".
fn shape_phrases(objects: &[ObjectInfo], rng: &mut Rng) -> Vec<String> {
    grouped(objects, rng)
        .into_iter()
        .map(|members| match members.len() {
            1 => with_article(members[0].category_name().to_string()),
            n => format!("{} {}", COUNT_WORDS[n.min(4)], members[0].plural_name()),
        })
        .collect()
}

/// The objects grouped by category, the groups in a random order.
fn grouped<'a>(objects: &'a [ObjectInfo], rng: &mut Rng) -> Vec<Vec<&'a ObjectInfo>> {
    let mut order: Vec<usize> = Vec::new();
    for o in objects {
        if !order.contains(&o.category) {
            order.push(o.category);
        }
    }
    // Fisher-Yates with the caption generator.
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order.into_iter().map(|cat| objects.iter().filter(|o| o.category == cat).collect()).collect()
}

/// A caption of `objects` on background `bg`, with template `template`
/// (a random one when `None`).
pub(super) fn caption_of(objects: &[ObjectInfo], bg: usize, template: Option<usize>, rng: &mut Rng) -> String {
    // Three random captions in four name the shapes alone: with colour and
    // background in every caption (or in half of them), contrastive
    // training matches pairs by those easy cues and never learns what a
    // shape word means (docs/pretrain.md).
    let random_template = |rng: &mut Rng| match rng.below(4) {
        0 => rng.below(FIRST_SHAPES_ONLY_TEMPLATE),
        _ => FIRST_SHAPES_ONLY_TEMPLATE + rng.below(NUM_TEMPLATES - FIRST_SHAPES_ONLY_TEMPLATE),
    };
    let t = template.unwrap_or_else(|| random_template(rng)) % NUM_TEMPLATES;
    if t >= FIRST_SHAPES_ONLY_TEMPLATE {
        if objects.is_empty() {
            return "an empty picture.".to_string();
        }
        let list = join_list(&shape_phrases(objects, rng));
        return if t == FIRST_SHAPES_ONLY_TEMPLATE { format!("a photo of {list}.") } else { format!("{list}.") };
    }
    let on = background_phrase(bg, rng);
    if objects.is_empty() {
        return format!("an empty scene {on}.");
    }
    let groups = group_phrases(objects, rng);
    let phrases: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
    let list = join_list(&phrases);
    let n = objects.len();
    let bg_word = BACKGROUNDS[bg];
    match t {
        0 => format!("a photo of {list} {on}."),
        1 => format!("{list} {on}."),
        2 => format!("there {} {list} {on}.", if groups[0].1 { "are" } else { "is" }),
        3 => format!("{} {} {on}: {list}.", COUNT_WORDS[n.min(4)], if n == 1 { "shape" } else { "shapes" }),
        4 => format!("an image with {list} {on}."),
        5 => format!("a picture of {list} with {} {bg_word} background.", article(bg_word)),
        6 => {
            // Every object on its own, with where it is.
            let items: Vec<String> =
                objects.iter().map(|o| format!("{} {}", object_phrase(o, rng), o.position_phrase())).collect();
            format!("{}, {on}.", join_list(&items))
        }
        7 => {
            if phrases.len() == 1 {
                format!("{list} alone {on}.")
            } else {
                format!("{} next to {}, {on}.", phrases[0], join_list(&phrases[1..]))
            }
        }
        8 => format!("{} {bg_word} background with {list} on it.", article(bg_word)),
        9 => format!("a drawing of {list} {on}."),
        10 => format!("a close-up photo of {list} {on}."),
        _ => format!("a simple illustration of {list} {on}."),
    }
}

impl Sample {
    /// A caption with a random template and wording from `rng`.
    pub fn caption(&self, rng: &mut Rng) -> String {
        caption_of(&self.objects, self.background_index, None, rng)
    }

    /// A caption with template `template` (0..[`NUM_TEMPLATES`]); the
    /// optional words (size, article forms) come from `rng`.
    pub fn caption_with_template(&self, template: usize, rng: &mut Rng) -> String {
        caption_of(&self.objects, self.background_index, Some(template), rng)
    }
}
